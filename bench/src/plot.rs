//! PNG figures of a run's timeline, laid out like the NetMigrate paper's figures 4–6: three
//! stacked panels on one time axis — throughput, p50 latency, p99 latency — with dashed
//! lines where a migration started and finished.
//!
//! Rendering is self-contained: plotters' bitmap backend draws into a buffer, the `png`
//! crate encodes it, and text is rasterized by `ab_glyph` from DejaVu Sans embedded in the
//! binary (`bench/assets/`, Bitstream Vera license), so neither building nor running needs
//! fontconfig, freetype or any system font. Text goes through [`TextBackend`], a thin
//! wrapper over the bitmap backend, rather than plotters' own `ab_glyph` feature: plotters
//! 0.3.7 drops each glyph's left side bearing there, which spaces letters unevenly
//! ("tim e (s)").

use crate::measure::SLOT;
use crate::report::TimelineSlot;
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};
use std::io;
use std::ops::Range;
use std::path::Path;

/// The figure's size in pixels.
pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 900;

/// What to draw: a run's timeline and, if one ran, its migration window.
pub struct Figure<'a> {
    /// Shown above the panels, e.g. "netmigrate · YCSB-b · medium".
    pub title: String,
    /// One slot per 100 ms, as in the report.
    pub timeline: &'a [TimelineSlot],
    /// `(started_at_s, finished_at_s)` on the timeline's time axis, if a migration ran.
    pub migration: Option<(f64, f64)>,
}

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core); license in `bench/assets/`.
static FONT_DATA: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family every text style here names; [`TextBackend`] draws every family in DejaVu Sans.
const FONT: &str = "sans-serif";

const THROUGHPUT_COLOR: RGBColor = RGBColor(31, 119, 180);
const P50_COLOR: RGBColor = RGBColor(44, 160, 44);
const P99_COLOR: RGBColor = RGBColor(214, 39, 40);
const MIGRATION_COLOR: RGBColor = RGBColor(64, 64, 64);

/// Draws `figure` as a PNG at `path` (about 1200×900), replacing any file there.
pub fn draw(path: &Path, figure: &Figure<'_>) -> io::Result<()> {
    let font = FontRef::try_from_slice(FONT_DATA)
        .map_err(|e| io::Error::other(format!("the embedded figure font is not usable: {e}")))?;
    let mut pixels = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    render(&mut pixels, font, figure)
        .map_err(|e| io::Error::other(format!("cannot draw figure {}: {e}", path.display())))?;
    let png = encode(&pixels)?;
    std::fs::write(path, png).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write figure to {}: {e}", path.display()),
        )
    })
}

fn encode(rgb: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// One panel's series: a value per slot, `None` where the slot has nothing to show.
struct Panel {
    label: String,
    color: RGBColor,
    points: Vec<(f64, Option<f64>)>,
    y_top: f64,
    /// The value the points were clipped to, when an outlier would flatten the plot.
    cap: Option<f64>,
}

fn render(pixels: &mut [u8], font: FontRef<'static>, figure: &Figure<'_>) -> DrawResult {
    let root = TextBackend {
        inner: BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)),
        font,
    }
    .into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&figure.title, (FONT, 26).into_font().color(&BLACK))?;

    let slots: Vec<&TimelineSlot> = figure
        .timeline
        .iter()
        .filter(|s| s.t_s.is_finite())
        .collect();
    let migration = figure
        .migration
        .filter(|(start, end)| start.is_finite() && end.is_finite());
    let x_range = time_range(&slots, migration);
    let panels = panels(&slots);

    let areas = root.split_evenly((panels.len(), 1));
    let last = panels.len() - 1;
    for (i, (area, panel)) in areas.iter().zip(&panels).enumerate() {
        draw_panel(
            area,
            panel,
            x_range.clone(),
            migration,
            i == 0,
            i == last,
            slots.is_empty(),
        )?;
    }
    root.present()?;
    Ok(())
}

/// From 0 to the last slot's end (or the migration's end, if later).
fn time_range(slots: &[&TimelineSlot], migration: Option<(f64, f64)>) -> Range<f64> {
    let mut end = slots.iter().map(|s| s.t_s).fold(0.0, f64::max);
    if let Some((start, finish)) = migration {
        end = end.max(start).max(finish);
    }
    if end <= 0.0 {
        end = 1.0;
    }
    0.0..end
}

fn panels(slots: &[&TimelineSlot]) -> Vec<Panel> {
    let per_second = 1.0 / SLOT.as_secs_f64();
    let throughput: Vec<(f64, Option<f64>)> = slots
        .iter()
        .map(|s| (s.t_s, Some(s.ops as f64 * per_second / 1000.0)))
        .collect();
    // An empty slot has no latency (the report writes 0): leave a gap rather than a dip.
    let latency = |value: fn(&TimelineSlot) -> f64| -> Vec<(f64, Option<f64>)> {
        slots
            .iter()
            .map(|s| {
                let v = value(s);
                (s.t_s, (s.ops > 0 && v.is_finite()).then_some(v))
            })
            .collect()
    };

    let mut p99 = Panel {
        label: "p99 latency (µs)".into(),
        color: P99_COLOR,
        points: latency(|s| s.p99_us),
        y_top: 0.0,
        cap: None,
    };
    // One stalled slot can be 100× the rest: cap the axis at 1.5× the 99th-percentile slot
    // and clip what lies above, saying so on the axis.
    if let Some(cap) = percentile(&p99.points, 0.99).map(|p| p * 1.5) {
        if cap > 0.0 && max_of(&p99.points) > cap {
            p99.cap = Some(cap);
            p99.label = format!("p99 latency (µs, clipped at {})", short(cap));
            for (_, v) in &mut p99.points {
                *v = v.map(|v| v.min(cap));
            }
        }
    }

    let mut panels = vec![
        Panel {
            label: "throughput (KQPS)".into(),
            color: THROUGHPUT_COLOR,
            points: throughput,
            y_top: 0.0,
            cap: None,
        },
        Panel {
            label: "p50 latency (µs)".into(),
            color: P50_COLOR,
            points: latency(|s| s.p50_us),
            y_top: 0.0,
            cap: None,
        },
        p99,
    ];
    for panel in &mut panels {
        let max = max_of(&panel.points);
        panel.y_top = if max > 0.0 { max * 1.1 } else { 1.0 };
    }
    panels
}

fn max_of(points: &[(f64, Option<f64>)]) -> f64 {
    points.iter().filter_map(|p| p.1).fold(0.0, f64::max)
}

/// Nearest-rank percentile of the present values.
fn percentile(points: &[(f64, Option<f64>)], q: f64) -> Option<f64> {
    let mut values: Vec<f64> = points.iter().filter_map(|p| p.1).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// A compact number for labels: 1234.5 → "1235", 12.34 → "12.3", 0.1234 → "0.12".
fn short(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A tick label: at most three decimals, trailing zeros dropped (2 → "2", 0.25 → "0.25").
fn tick(v: f64) -> String {
    if v.abs() >= 1000.0 {
        return format!("{v:.0}");
    }
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

fn draw_panel(
    area: &DrawingArea<TextBackend<'_>, Shift>,
    panel: &Panel,
    x_range: Range<f64>,
    migration: Option<(f64, f64)>,
    top: bool,
    bottom: bool,
    empty: bool,
) -> DrawResult {
    let y_top = panel.y_top;
    let mut chart = ChartBuilder::on(area)
        .margin_left(10)
        .margin_right(25)
        .margin_top(if top { 5 } else { 10 })
        .margin_bottom(5)
        .x_label_area_size(if bottom { 50 } else { 25 })
        .y_label_area_size(80)
        .build_cartesian_2d(x_range.clone(), 0.0..y_top)?;

    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .axis_desc_style((FONT, 17))
        .label_style((FONT, 14))
        .y_desc(panel.label.as_str())
        .y_label_formatter(&|v| tick(*v))
        .x_label_formatter(&|v| tick(*v))
        .x_labels(12)
        .y_labels(6);
    if bottom {
        mesh.x_desc("time (s)");
    }
    mesh.draw()?;

    // Thin lines through consecutive present values; a lone value gets a dot.
    let style = ShapeStyle::from(&panel.color).stroke_width(1);
    let points = &panel.points;
    let mut i = 0;
    while i < points.len() {
        if points[i].1.is_none() {
            i += 1;
            continue;
        }
        let start = i;
        while i < points.len() && points[i].1.is_some() {
            i += 1;
        }
        let run = points[start..i].iter().map(|&(t, v)| (t, v.unwrap_or(0.0)));
        if i - start == 1 {
            chart.draw_series(run.map(|p| Circle::new(p, 2, style.filled())))?;
        } else {
            chart.draw_series(LineSeries::new(run, style))?;
        }
    }
    // Clipped outliers: a small triangle at the ceiling.
    if let Some(cap) = panel.cap {
        chart.draw_series(
            points
                .iter()
                .filter(|p| p.1 == Some(cap))
                .map(|&(t, _)| TriangleMarker::new((t, cap), 4, style.filled())),
        )?;
    }

    if empty {
        let middle = ((x_range.start + x_range.end) / 2.0, y_top / 2.0);
        chart.plotting_area().draw(&Text::new(
            "no data",
            middle,
            (FONT, 22)
                .into_font()
                .color(&RGBColor(120, 120, 120))
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
    }

    if let Some((start, finish)) = migration {
        let dashed = ShapeStyle::from(&MIGRATION_COLOR).stroke_width(2);
        for x in [start, finish] {
            chart.draw_series(DashedLineSeries::new([(x, 0.0), (x, y_top)], 8, 5, dashed))?;
        }
        if top {
            label_migration(&chart, area, start, finish, y_top)?;
        }
    }
    Ok(())
}

/// "migration start" left of its line and "migration end" right of its line, one row
/// apart, each flipped to the other side of its line where it would leave the plot, on a
/// light backing so the data under it does not hide it.
fn label_migration(
    chart: &ChartContext<'_, TextBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    area: &DrawingArea<TextBackend<'_>, Shift>,
    start: f64,
    finish: f64,
    y_top: f64,
) -> DrawResult {
    let font = (FONT, 15).into_font().color(&MIGRATION_COLOR);
    let (x_pixels, _) = chart.plotting_area().get_pixel_range();
    let gap = 5;
    for (row, (x, text, prefer_left)) in [
        (start, "migration start", true),
        (finish, "migration end", false),
    ]
    .into_iter()
    .enumerate()
    {
        let (px, _) = chart.backend_coord(&(x, y_top));
        let (width, height) = area.estimate_text_size(text, &font)?;
        let (width, height) = (width as i32, height as i32);
        let fits_left = px - gap - width >= x_pixels.start;
        let fits_right = px + gap + width <= x_pixels.end;
        let left = if prefer_left {
            fits_left || !fits_right
        } else {
            !fits_right && fits_left
        };
        let (dx, h) = if left {
            (-gap, HPos::Right)
        } else {
            (gap, HPos::Left)
        };
        let dy = 4 + row as i32 * (height + 4);
        let (x0, x1) = if left {
            (dx - width - 2, dx + 2)
        } else {
            (dx - 2, dx + width + 2)
        };
        chart.plotting_area().draw(
            &(EmptyElement::at((x, y_top))
                + Rectangle::new(
                    [(x0, dy - 1), (x1, dy + height + 1)],
                    WHITE.mix(0.85).filled(),
                )
                + Text::new(text, (dx, dy), font.pos(Pos::new(h, VPos::Top)))),
        )?;
    }
    Ok(())
}

/// The bitmap backend with text drawn by `ab_glyph` from the embedded font: glyphs sit at
/// their advance plus kerning, offset by their own bounds, on a shared baseline.
struct TextBackend<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

type BitMapError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

impl TextBackend<'_> {
    /// Width (advances and kerning) and height (ascent to descent) of one line, in pixels.
    fn measure(&self, text: &str, size: f64) -> (f32, f32) {
        let font = self.font.as_scaled(PxScale::from(size as f32));
        let mut width = 0.0;
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = previous {
                width += font.kern(p, id);
            }
            width += font.h_advance(id);
            previous = Some(id);
        }
        (width, font.height())
    }
}

impl DrawingBackend for TextBackend<'_> {
    type ErrorType = BitMapError;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<BitMapError>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<BitMapError>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<BitMapError>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitMapError>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitMapError>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitMapError>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitMapError>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vertices: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitMapError>> {
        self.inner.fill_polygon(vertices, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<BitMapError>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<BitMapError>> {
        let (w, h) = self.measure(text, style.size());
        Ok((w.ceil() as u32, h.ceil() as u32))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<BitMapError>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size();
        let (width, height) = self.measure(text, size);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0.0,
            VPos::Center => -height / 2.0,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        let font = self.font.as_scaled(PxScale::from(size as f32));
        let baseline = dy + font.ascent();
        let mut caret = dx;
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = previous {
                caret += font.kern(p, id);
            }
            previous = Some(id);
            let glyph = id.with_scale_and_position(font.scale(), ab_glyph::point(caret, baseline));
            caret += font.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue; // a space
            };
            let bounds = outline.px_bounds();
            let (x0, y0) = (bounds.min.x as i32, bounds.min.y as i32);
            let mut result = Ok(());
            outline.draw(|x, y, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let (tx, ty) = transform.transform(x0 + x as i32, y0 + y as i32);
                let pixel = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                result = self.inner.draw_pixel((pos.0 + tx, pos.1 + ty), pixel);
            });
            result?;
        }
        Ok(())
    }
}

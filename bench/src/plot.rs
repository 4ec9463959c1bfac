//! PNG figures of a run's timeline, laid out like the NetMigrate paper's figures 4–6: three
//! stacked panels on one time axis — throughput, p50 latency, p99 latency — with dashed
//! lines where a migration started and finished. [`draw_comparison`] stacks one throughput
//! panel per run on shared axes, like the paper's figure 4, with each run's average
//! throughput before, during and after its migration.
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
/// Height of each run's panel in [`draw_comparison`]; the title band comes on top.
pub const PANEL_HEIGHT: u32 = 260;
/// Room for a 26-px title: `titled` takes the text's height plus 10 px.
const TITLE_HEIGHT: u32 = 45;

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
const AVERAGE_COLOR: RGBColor = RGBColor(230, 100, 0);

const THROUGHPUT_LABEL: &str = "throughput (KQPS)";

/// Draws `figure` as a PNG at `path` (about 1200×900), replacing any file there.
pub fn draw(path: &Path, figure: &Figure<'_>) -> io::Result<()> {
    write_png(path, (WIDTH, HEIGHT), |root| render(root, figure))
}

/// Draws `runs` as one PNG at `path`, replacing any file there: under `title`, one
/// throughput panel per run, captioned with the run's title, stacked top to bottom on the
/// same time and throughput axes, with each run's migration window and average throughput
/// before, during and after it. [`WIDTH`] wide, [`PANEL_HEIGHT`] per run plus a title band.
pub fn draw_comparison(path: &Path, title: &str, runs: &[Figure<'_>]) -> io::Result<()> {
    if runs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no runs to compare in {}", path.display()),
        ));
    }
    let height = u32::try_from(runs.len())
        .ok()
        .and_then(|n| n.checked_mul(PANEL_HEIGHT))
        .and_then(|h| h.checked_add(TITLE_HEIGHT))
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "too many runs for one figure")
        })?;
    write_png(path, (WIDTH, height), |root| {
        render_comparison(root, title, runs)
    })
}

type Area<'a> = DrawingArea<TextBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, TextBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Paints a white `size` bitmap with `paint` and writes it to `path` as a PNG.
fn write_png(
    path: &Path,
    size: (u32, u32),
    paint: impl FnOnce(&Area<'_>) -> DrawResult,
) -> io::Result<()> {
    let font = FontRef::try_from_slice(FONT_DATA)
        .map_err(|e| io::Error::other(format!("the embedded figure font is not usable: {e}")))?;
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    paint_on(&mut pixels, size, font, paint)
        .map_err(|e| io::Error::other(format!("cannot draw figure {}: {e}", path.display())))?;
    let png = encode(&pixels, size)?;
    std::fs::write(path, png).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write figure to {}: {e}", path.display()),
        )
    })
}

fn paint_on(
    pixels: &mut [u8],
    size: (u32, u32),
    font: FontRef<'static>,
    paint: impl FnOnce(&Area<'_>) -> DrawResult,
) -> DrawResult {
    let root = TextBackend {
        inner: BitMapBackend::with_buffer(pixels, size),
        font,
    }
    .into_drawing_area();
    root.fill(&WHITE)?;
    paint(&root)?;
    root.present()?;
    Ok(())
}

fn encode(rgb: &[u8], (width, height): (u32, u32)) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
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

fn render(root: &Area<'_>, figure: &Figure<'_>) -> DrawResult {
    let root = root.titled(&figure.title, (FONT, 26).into_font().color(&BLACK))?;
    let (slots, migration) = finite(figure);
    let x_range = time_range(&slots, migration);
    let panels = panels(&slots);

    let areas = root.split_evenly((panels.len(), 1));
    let last = panels.len() - 1;
    for (i, (area, panel)) in areas.iter().zip(&panels).enumerate() {
        let mut chart = panel_axes(area, panel, x_range.clone(), None, i == 0, i == last)?;
        draw_data(&mut chart, panel, migration)?;
        if let (0, Some((start, finish))) = (i, migration) {
            label_migration(&chart, area, start, finish, panel.y_top)?;
        }
    }
    Ok(())
}

fn render_comparison(root: &Area<'_>, title: &str, runs: &[Figure<'_>]) -> DrawResult {
    let root = root.titled(title, (FONT, 26).into_font().color(&BLACK))?;
    let mut panels = Vec::with_capacity(runs.len());
    let mut x_end: f64 = 0.0;
    for run in runs {
        let (slots, migration) = finite(run);
        x_end = x_end.max(time_range(&slots, migration).end);
        let panel = Panel {
            label: THROUGHPUT_LABEL.into(),
            color: THROUGHPUT_COLOR,
            points: throughput(&slots),
            y_top: 0.0,
            cap: None,
        };
        panels.push((panel, migration));
    }
    // One time and one throughput range for every panel, so the runs compare at a glance.
    let max = panels
        .iter()
        .map(|(p, _)| max_of(&p.points))
        .fold(0.0, f64::max);
    let y_top = headroom(max);

    let areas = root.split_evenly((runs.len(), 1));
    let last = runs.len() - 1;
    for (i, ((area, run), (mut panel, migration))) in areas.iter().zip(runs).zip(panels).enumerate()
    {
        panel.y_top = y_top;
        let caption = Some(run.title.as_str());
        let mut chart = panel_axes(area, &panel, 0.0..x_end, caption, i == 0, i == last)?;
        let averages = averages(&panel.points, migration);
        // Under the data, so that a steady run stays visible on its average.
        draw_averages(&mut chart, &averages)?;
        draw_data(&mut chart, &panel, migration)?;
        label_averages(&chart, area, &averages)?;
    }
    Ok(())
}

/// The figure's slots and migration window, leaving out non-finite times the axes cannot hold.
fn finite<'a>(figure: &Figure<'a>) -> (Vec<&'a TimelineSlot>, Option<(f64, f64)>) {
    let slots = figure
        .timeline
        .iter()
        .filter(|s| s.t_s.is_finite())
        .collect();
    let migration = figure
        .migration
        .filter(|(start, end)| start.is_finite() && end.is_finite());
    (slots, migration)
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

/// Each slot's throughput in KQPS.
fn throughput(slots: &[&TimelineSlot]) -> Vec<(f64, Option<f64>)> {
    let per_second = 1.0 / SLOT.as_secs_f64();
    slots
        .iter()
        .map(|s| (s.t_s, Some(s.ops as f64 * per_second / 1000.0)))
        .collect()
}

/// A y-axis top with room above the highest value (1 when there is none).
fn headroom(max: f64) -> f64 {
    if max > 0.0 {
        max * 1.1
    } else {
        1.0
    }
}

fn panels(slots: &[&TimelineSlot]) -> Vec<Panel> {
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
            label: THROUGHPUT_LABEL.into(),
            color: THROUGHPUT_COLOR,
            points: throughput(slots),
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
        panel.y_top = headroom(max_of(&panel.points));
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

/// A panel's grid and axes, with `caption` above them if given.
fn panel_axes<'a, 'b>(
    area: &'a Area<'b>,
    panel: &Panel,
    x_range: Range<f64>,
    caption: Option<&str>,
    top: bool,
    bottom: bool,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_left(10)
        .margin_right(25)
        .margin_top(if top { 5 } else { 10 })
        .margin_bottom(5)
        .x_label_area_size(if bottom { 50 } else { 25 })
        .y_label_area_size(80);
    if let Some(caption) = caption {
        builder.caption(caption, (FONT, 18).into_font().color(&BLACK));
    }
    let mut chart = builder.build_cartesian_2d(x_range, 0.0..panel.y_top)?;

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
    Ok(chart)
}

/// A panel's series, its "no data" note if it has none, and the migration's lines.
fn draw_data(
    chart: &mut Chart<'_, '_>,
    panel: &Panel,
    migration: Option<(f64, f64)>,
) -> DrawResult {
    let (x_range, y_top) = (chart.x_range(), panel.y_top);
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

    if points.is_empty() {
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
    }
    Ok(())
}

/// "migration start" left of its line and "migration end" right of its line, one row
/// apart, each flipped to the other side of its line where it would leave the plot, on a
/// light backing so the data under it does not hide it.
fn label_migration(
    chart: &Chart<'_, '_>,
    area: &Area<'_>,
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

/// A run's mean throughput over one phase, spanning `from`..`to` on the time axis.
struct Average {
    from: f64,
    to: f64,
    kqps: f64,
}

/// Mean throughput before (t < start), during (start ≤ t ≤ end) and after (t > end) the
/// migration, or over the whole run without one; a phase without slots has no average.
fn averages(points: &[(f64, Option<f64>)], migration: Option<(f64, f64)>) -> Vec<Average> {
    let (Some(&(first, _)), Some(&(last, _))) = (points.first(), points.last()) else {
        return Vec::new();
    };
    // Without a migration, every slot comes before one that never starts.
    let (start, end) = migration.unwrap_or((f64::INFINITY, f64::INFINITY));
    let mut sums = [(0.0, 0u32); 3];
    for &(t, value) in points {
        let phase = if t < start {
            0
        } else if t <= end {
            1
        } else {
            2
        };
        if let Some(value) = value {
            sums[phase].0 += value;
            sums[phase].1 += 1;
        }
    }
    let bounds = [first, start, end, last];
    sums.iter()
        .enumerate()
        .filter(|(_, &(_, n))| n > 0)
        .map(|(i, &(sum, n))| Average {
            from: bounds[i].max(first),
            to: bounds[i + 1].min(last),
            kqps: sum / f64::from(n),
        })
        .collect()
}

/// Each average as a dashed segment across its phase.
fn draw_averages(chart: &mut Chart<'_, '_>, averages: &[Average]) -> DrawResult {
    let style = ShapeStyle::from(&AVERAGE_COLOR).stroke_width(2);
    for average in averages {
        let ends = [(average.from, average.kqps), (average.to, average.kqps)];
        chart.draw_series(DashedLineSeries::new(ends, 6, 4, style))?;
    }
    Ok(())
}

/// "avg 148k" over the middle of each average's segment, on a light backing. A label that
/// would cover an earlier one (a short migration crowds them) takes the nearest free row
/// above or below its segment.
fn label_averages(chart: &Chart<'_, '_>, area: &Area<'_>, averages: &[Average]) -> DrawResult {
    let font = (FONT, 14).into_font().color(&AVERAGE_COLOR);
    let (x_pixels, y_pixels) = chart.plotting_area().get_pixel_range();
    let mut taken: Vec<[i32; 4]> = Vec::new();
    for average in averages {
        let (from, to) = ((average.from, average.kqps), (average.to, average.kqps));
        let text = format!("avg {}", kilo(average.kqps));
        let (width, height) = area.estimate_text_size(&text, &font)?;
        let (width, height) = (width as i32 + 4, height as i32 + 2); // with the backing
        let (left, line) = chart.backend_coord(&from);
        let (right, _) = chart.backend_coord(&to);
        let x0 = ((left + right - width) / 2)
            .min(x_pixels.end - width)
            .max(x_pixels.start);
        let above = line - 4 - height;
        let free = |y0: i32| {
            y0 >= y_pixels.start
                && y0 + height <= y_pixels.end
                && !taken
                    .iter()
                    .any(|r| x0 < r[2] && r[0] < x0 + width && y0 < r[3] && r[1] < y0 + height)
        };
        let y0 = (0..4)
            .flat_map(|k| [above - k * (height + 2), line + 4 + k * (height + 2)])
            .find(|&y0| free(y0))
            .unwrap_or(above);
        taken.push([x0, y0, x0 + width, y0 + height]);

        // Offsets from the segment's left end, where the element is anchored.
        let (dx, dy) = (x0 - left, y0 - line);
        chart.plotting_area().draw(
            &(EmptyElement::at(from)
                + Rectangle::new(
                    [(dx, dy), (dx + width, dy + height)],
                    WHITE.mix(0.85).filled(),
                )
                + Text::new(text, (dx + 2, dy + 1), font.clone())),
        )?;
    }
    Ok(())
}

/// KQPS as a short rate: 148.3 → "148k", 1520 → "1.52M".
fn kilo(kqps: f64) -> String {
    if kqps >= 1000.0 {
        format!("{}M", short(kqps / 1000.0))
    } else {
        format!("{}k", short(kqps))
    }
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

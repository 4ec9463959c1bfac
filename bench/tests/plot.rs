//! PNG figures: a synthetic run with a migration window, an empty run, an unwritable path,
//! and a comparison of runs stacked one panel per run.

use bench::plot::{draw, draw_comparison, Figure, PANEL_HEIGHT, WIDTH};
use bench::report::TimelineSlot;
use std::path::{Path, PathBuf};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A unique path in the temp directory, removed when dropped. To look at the figures, set
/// `NETMIGRATE_KEEP_FIGURES` to a directory: each is copied there first.
struct TempPng(PathBuf);

impl TempPng {
    fn new(tag: &str) -> TempPng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        TempPng(std::env::temp_dir().join(format!(
            "netmigrate-plot-{tag}-{}-{nanos}.png",
            std::process::id()
        )))
    }
}

impl Drop for TempPng {
    fn drop(&mut self) {
        if let Some(dir) = std::env::var_os("NETMIGRATE_KEEP_FIGURES") {
            if let Some(name) = self.0.file_name().filter(|_| self.0.exists()) {
                let _ = std::fs::copy(&self.0, PathBuf::from(dir).join(name));
            }
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

/// 20 s of 100-ms slots: ~50 KQPS, a dip and latency bump during a migration from 8 s to
/// 11 s, one empty slot, and one p99 outlier that should be clipped.
fn synthetic() -> Vec<TimelineSlot> {
    (1..=200)
        .map(|i| {
            let t_s = i as f64 * 0.1;
            let migrating = (8.0..11.0).contains(&t_s);
            let wobble = ((i * 37) % 11) as f64;
            let ops = if i == 95 {
                0
            } else if migrating {
                3_500 + (wobble as u64) * 30
            } else {
                5_000 + (wobble as u64) * 20
            };
            let p50_us = if migrating { 30.0 } else { 20.0 } + wobble;
            let p99_us = if i == 150 {
                50_000.0
            } else if migrating {
                120.0 + 4.0 * wobble
            } else {
                60.0 + 3.0 * wobble
            };
            TimelineSlot {
                t_s,
                ops,
                p50_us: if ops == 0 { 0.0 } else { p50_us },
                p99_us: if ops == 0 { 0.0 } else { p99_us },
            }
        })
        .collect()
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).expect("the figure was written");
    assert!(bytes.starts_with(PNG_MAGIC), "not a PNG");
    assert!(
        bytes.len() > 10_000,
        "suspiciously small figure: {} bytes",
        bytes.len()
    );
}

/// The figure's width, height and RGB pixels.
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).expect("the figure was written");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a valid PNG header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a sane size")];
    let info = reader.next_frame(&mut pixels).expect("valid PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

#[test]
fn draws_a_png_with_a_migration_window() {
    let timeline = synthetic();
    let out = TempPng::new("migration");
    let figure = Figure {
        title: "netmigrate · YCSB-b · medium".into(),
        timeline: &timeline,
        migration: Some((8.0, 11.0)),
    };
    draw(&out.0, &figure).expect("the figure is drawn");
    assert_png(&out.0);
    // Drawing again replaces the file.
    draw(&out.0, &figure).expect("the figure is redrawn");
    assert_png(&out.0);
}

#[test]
fn draws_axes_for_an_empty_timeline() {
    let out = TempPng::new("empty");
    let figure = Figure {
        title: "netmigrate · no data".into(),
        timeline: &[],
        migration: None,
    };
    draw(&out.0, &figure).expect("an empty figure is drawn");
    assert_png(&out.0);
}

#[test]
fn draws_a_short_migration_at_the_edge() {
    // A window narrower than its labels, hard against the start of the axis.
    let timeline: Vec<TimelineSlot> = synthetic().into_iter().take(30).collect();
    let out = TempPng::new("edge");
    let figure = Figure {
        title: "netmigrate · short migration".into(),
        timeline: &timeline,
        migration: Some((0.05, 0.25)),
    };
    draw(&out.0, &figure).expect("the figure is drawn");
    assert_png(&out.0);
}

#[test]
fn reports_an_unwritable_path() {
    let timeline = synthetic();
    let dir = TempPng::new("missing-dir");
    let path = dir.0.join("figure.png");
    let figure = Figure {
        title: "unwritable".into(),
        timeline: &timeline,
        migration: None,
    };
    let err = draw(&path, &figure).expect_err("a directory that does not exist");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let message = err.to_string();
    assert!(
        message.contains("cannot write figure") && message.contains("figure.png"),
        "unclear error: {message}"
    );
    assert!(!path.exists());
}

#[test]
fn draws_a_comparison_with_a_panel_per_run() {
    let long = synthetic();
    // Twice the load and a 0.3-s migration, on a shorter run: the axes must still match.
    let short: Vec<TimelineSlot> = synthetic()
        .into_iter()
        .take(150)
        .map(|s| TimelineSlot {
            ops: s.ops * 2,
            ..s
        })
        .collect();
    // The same run without its migration: one average over the whole run.
    let baseline = synthetic();
    let runs = [
        Figure {
            title: "rocksteady".into(),
            timeline: &long,
            migration: Some((8.0, 11.0)),
        },
        Figure {
            title: "netmigrate-short".into(),
            timeline: &short,
            migration: Some((5.0, 5.3)),
        },
        Figure {
            title: "no migration".into(),
            timeline: &baseline,
            migration: None,
        },
    ];
    let out = TempPng::new("comparison");
    draw_comparison(&out.0, "YCSB-b · medium", &runs).expect("the comparison is drawn");
    assert_png(&out.0);
    let (width, height, pixels) = decode(&out.0);
    assert_eq!(width, WIDTH);

    let one = TempPng::new("comparison-one");
    draw_comparison(&one.0, "YCSB-b · medium", &runs[..1]).expect("one run is drawn");
    let (one_width, one_height, _) = decode(&one.0);
    assert_eq!(one_width, WIDTH);
    assert!(
        one_height > PANEL_HEIGHT,
        "no room for a title: {one_height}"
    );
    assert_eq!(height - one_height, 2 * PANEL_HEIGHT, "height per panel");

    // Every panel shows its throughput (blue) and averages (orange), tinted where lines are
    // anti-aliased; the grid, axes and text are grey. Panels are counted from the bottom,
    // under the title band.
    let row = WIDTH as usize * 3;
    for panel in 0..runs.len() {
        let bottom = (height - panel as u32 * PANEL_HEIGHT) as usize;
        let band = &pixels[(bottom - PANEL_HEIGHT as usize) * row..bottom * row];
        let count = |hue: fn(i32, i32) -> bool| {
            band.chunks(3)
                .filter(|p| hue(i32::from(p[0]), i32::from(p[2])))
                .count()
        };
        let blue = count(|r, b| b - r > 40);
        let orange = count(|r, b| r - b > 40);
        assert!(
            blue > 500,
            "panel {panel} from the bottom: {blue} blue pixels"
        );
        assert!(
            orange > 500,
            "panel {panel} from the bottom: {orange} orange pixels"
        );
    }
}

#[test]
fn refuses_an_empty_comparison() {
    let out = TempPng::new("comparison-empty");
    let err = draw_comparison(&out.0, "nothing", &[]).expect_err("no runs");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(!out.0.exists());
}

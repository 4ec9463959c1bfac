//! PNG figures: a synthetic run with a migration window, an empty run, and an unwritable path.

use bench::plot::{draw, Figure};
use bench::report::TimelineSlot;
use std::path::PathBuf;

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

fn assert_png(path: &std::path::Path) {
    let bytes = std::fs::read(path).expect("the figure was written");
    assert!(bytes.starts_with(PNG_MAGIC), "not a PNG");
    assert!(
        bytes.len() > 10_000,
        "suspiciously small figure: {} bytes",
        bytes.len()
    );
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

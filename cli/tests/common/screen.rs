//! A page rendered by headless Chromium (installed by scripts/bootstrap)
//! and read back as pixels, to check that charts draw inside their areas.

#![allow(dead_code)] // Each test uses different parts.

use std::path::Path;
use std::process::Command;

/// An RGB(A) screenshot.
pub struct Screenshot {
    width: usize,
    channels: usize,
    pixels: Vec<u8>,
}

/// A rectangle of pixels, inclusive.
#[derive(Debug, Clone, Copy)]
pub struct Area {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

/// `#rrggbb` as bytes.
pub fn rgb(colour: &str) -> [u8; 3] {
    let v = u32::from_str_radix(colour.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

impl Screenshot {
    /// Renders `page` (a file) at `width`×`height` in headless Chromium,
    /// with a fresh profile under `scratch`.
    pub fn of(page: &Path, scratch: &Path, width: u32, height: u32) -> Self {
        let shot = scratch.join("page.png");
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!(
                "--user-data-dir={}",
                scratch.join("chromium").display()
            ))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium is installed by scripts/bootstrap");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let channels = info.color_type.samples();
        assert!(channels >= 3, "an RGB screenshot");
        buf.truncate(info.buffer_size());
        Self {
            width: info.width as usize,
            channels,
            pixels: buf,
        }
    }

    fn near(&self, i: usize, colour: [u8; 3]) -> bool {
        let p = &self.pixels[i * self.channels..];
        (0..3).all(|c| p[c].abs_diff(colour[c]) <= 12)
    }

    /// The bounding box of every pixel near `colour`: a chart's frame.
    pub fn frame(&self, colour: &str) -> Option<Area> {
        let colour = rgb(colour);
        let mut area: Option<Area> = None;
        for i in 0..self.pixels.len() / self.channels {
            if self.near(i, colour) {
                let (x, y) = (i % self.width, i / self.width);
                let a = area.get_or_insert(Area {
                    x0: x,
                    y0: y,
                    x1: x,
                    y1: y,
                });
                a.x0 = a.x0.min(x);
                a.y0 = a.y0.min(y);
                a.x1 = a.x1.max(x);
                a.y1 = a.y1.max(y);
            }
        }
        area
    }

    /// Pixels near `colour` inside `area`.
    pub fn count_in(&self, area: Area, colour: &str) -> usize {
        let colour = rgb(colour);
        (area.y0..=area.y1)
            .flat_map(|y| (area.x0..=area.x1).map(move |x| (x, y)))
            .filter(|&(x, y)| self.near(y * self.width + x, colour))
            .count()
    }
}

/// Checks a rendered A/B report: both methods' lines inside the timeline's
/// frame, and each bar colour that `expect_bars` names inside the edges'
/// frame (the legends lie outside both).
pub fn check_ab_report(page: &Path, scratch: &Path, expect_bars: &[&str]) {
    use flowattr_ab::html::*;
    let shot = Screenshot::of(page, scratch, 1000, 1400);
    let timeline = shot
        .frame(TIMELINE_FRAME)
        .expect("the timeline's frame on screen");
    for (name, colour) in [("heartbeat", HEARTBEAT_COLOUR), ("legacy", LEGACY_COLOUR)] {
        let n = shot.count_in(timeline, colour);
        assert!(
            n > 100,
            "the {name} line inside the timeline: {n} pixels ({timeline:?})"
        );
    }
    let edges = shot
        .frame(EDGES_FRAME)
        .expect("the edges chart's frame on screen");
    for colour in expect_bars {
        let n = shot.count_in(edges, colour);
        assert!(
            n > 100,
            "bars of {colour} inside the edges chart: {n} pixels ({edges:?})"
        );
    }
}

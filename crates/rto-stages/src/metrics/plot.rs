//! `metrics.png`: the panels of a stage's [`View`] in a grid of two columns, drawn with
//! plotters into a pixel buffer and encoded with `png`.
//!
//! The picture is part of the content-addressed folder, so it depends on the records alone:
//! text goes through the DejaVu Sans shipped in `assets/` (embedded, never a system font),
//! and the encoder's settings are fixed.

use super::{series, Panel, View};
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const WIDTH: u32 = 1200;
const ROW_HEIGHT: u32 = 340;
const TITLE_HEIGHT: u32 = 44;
/// Series colours in panel order (matplotlib's first four: a reader knows them).
const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

/// Registers the shipped font once; plotters with `ab_glyph` has none of its own.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    ok.then_some(()).ok_or_else(|| anyhow!("the embedded DejaVuSans.ttf is not a readable font"))
}

/// A panel's curves: (metric, points) for the keys that have any.
fn curves(panel: &Panel, records: &[Value]) -> Vec<(&'static str, Vec<(f64, f64)>)> {
    let curves: Vec<_> = panel.keys.iter().map(|&key| (key, series(records, key))).collect();
    curves.into_iter().filter(|(_, points)| !points.is_empty()).collect()
}

/// Writes the plot of `records` to `path` (the panels without data are left out).
pub fn write_png(path: &Path, title: &str, view: &View, records: &[Value]) -> Result<()> {
    let pixels = render(title, view, records).with_context(|| format!("drawing {}", path.display()))?;
    let (width, height) = (WIDTH, pixels.len() as u32 / (3 * WIDTH));
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Balanced);
    let mut writer = encoder.write_header().with_context(|| format!("writing {}", path.display()))?;
    writer.write_image_data(&pixels).with_context(|| format!("writing {}", path.display()))?;
    writer.finish().with_context(|| format!("writing {}", path.display()))
}

/// The RGB pixels of the plot, `WIDTH` wide.
fn render(title: &str, view: &View, records: &[Value]) -> Result<Vec<u8>> {
    ensure_font()?;
    let panels: Vec<_> = view
        .panels
        .iter()
        .map(|panel| (panel, curves(panel, records)))
        .filter(|(_, curves)| !curves.is_empty())
        .collect();
    let rows = panels.len().div_ceil(2).max(1) as u32;
    let height = TITLE_HEIGHT + rows * ROW_HEIGHT;
    let mut pixels = vec![0u8; (3 * WIDTH * height) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let (top, body) = root.split_vertically(TITLE_HEIGHT);
        top.titled(title, (FAMILY, 24)).map_err(|e| anyhow!("{e}"))?;
        if panels.is_empty() {
            body.draw_text("no metrics recorded", &(FAMILY, 18).into_text_style(&body), (20, 20))
                .map_err(|e| anyhow!("{e}"))?;
        }
        let areas = body.split_evenly((rows as usize, 2));
        for ((panel, curves), area) in panels.iter().zip(&areas) {
            draw_panel(area, panel, view.axis, curves)?;
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(pixels)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_panel(area: &Area, panel: &Panel, axis: &str, curves: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    let points = curves.iter().flat_map(|(_, p)| p.iter());
    let (x, y) = bounds(points);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(|e| anyhow!("{e}"))?;
    let (x_span, y_span) = (x.1 - x.0, y.1 - y.0);
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .x_desc(axis)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .x_label_formatter(&|v| tick(*v, x_span))
        .y_label_formatter(&|v| tick(*v, y_span))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (key, points)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let style = colour.stroke_width(2);
        let smooth = panel.smooth && points.len() > DENSE;
        let line = if smooth {
            // A noisy per-step curve: the raw points faint, the trend over them solid.
            let faint = LineSeries::new(points.iter().copied(), colour.mix(0.3).stroke_width(1));
            chart.draw_series(faint).map_err(|e| anyhow!("{e}"))?;
            chart.draw_series(LineSeries::new(smoothed(points), style)).map_err(|e| anyhow!("{e}"))?
        } else {
            // Sparse curves (eval every N steps) get a dot per point, or a lone point is invisible.
            if points.len() <= DENSE {
                let dots = points.iter().map(|&p| Circle::new(p, 3, colour.filled()));
                chart.draw_series(dots).map_err(|e| anyhow!("{e}"))?;
            }
            chart.draw_series(LineSeries::new(points.iter().copied(), style)).map_err(|e| anyhow!("{e}"))?
        };
        let label = if smooth { format!("{key} (smoothed)") } else { key.to_string() };
        line.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(190, 190, 190))
        .position(legend_corner(curves, x, y))
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

/// Curves with more points than this are drawn smoothed (with the raw points faint).
const DENSE: usize = 60;

/// A centred moving average over `points.len() / 30` points on each side (fewer at the ends):
/// unlike TensorBoard's exponential smoothing it does not lag, so a fast early drop of the
/// loss stays where it happened.
pub fn smoothed(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let half = (points.len() / 30).max(1);
    // Window sums from prefix sums: a 100k-step log stays linear in its length.
    let mut prefix = vec![0.0];
    prefix.extend(points.iter().scan(0.0, |sum, p| {
        *sum += p.1;
        Some(*sum)
    }));
    (0..points.len())
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
            (points[i].0, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect()
}

/// The corner of the chart that the fewest points fall in (upper right on a tie), for the
/// legend: a fixed corner hides the end of a falling loss or a rising accuracy.
fn legend_corner(curves: &[(&str, Vec<(f64, f64)>)], x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let inside = |right: bool, upper: bool, &(px, py): &(f64, f64)| {
        let (fx, fy) = ((px - x.0) / (x.1 - x.0), (py - y.0) / (y.1 - y.0));
        (if right { fx > 0.55 } else { fx < 0.45 }) && (if upper { fy > 0.6 } else { fy < 0.4 })
    };
    let count = |right, upper| curves.iter().flat_map(|(_, p)| p).filter(|p| inside(right, upper, p)).count();
    let (position, _, _) = corners.into_iter().min_by_key(|&(_, right, upper)| count(right, upper)).expect("4 corners");
    position
}

/// The x and y ranges of `points`, y padded by 5% so no curve runs along the frame; a flat
/// series (or a single point) gets a range around its value.
fn bounds<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> ((f64, f64), (f64, f64)) {
    let (mut x, mut y) = ((f64::INFINITY, f64::NEG_INFINITY), (f64::INFINITY, f64::NEG_INFINITY));
    for &(px, py) in points {
        x = (x.0.min(px), x.1.max(px));
        y = (y.0.min(py), y.1.max(py));
    }
    let widen = |(lo, hi): (f64, f64), pad: f64| {
        if hi > lo {
            (lo - pad * (hi - lo), hi + pad * (hi - lo))
        } else {
            let half = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo - half, hi + half)
        }
    };
    // x by 1%: the dot of an eval at the last step is not cut in half by the frame.
    (widen(x, 0.01), widen(y, 0.05))
}

/// A tick label with the decimals the axis' span needs, trailing zeros dropped (plotters'
/// default prints every digit of the f64); tiny or huge values in scientific notation (a
/// learning rate of 2e-5).
pub fn tick(value: f64, span: f64) -> String {
    // A tick at 0 computed as 0.1 + 0.2 - 0.3 would print as -2.78e-17.
    if value == 0.0 || value.abs() < span * 1e-9 {
        return "0".into();
    }
    if value.abs() < 1e-3 || value.abs() >= 1e6 {
        return format!("{value:.2e}");
    }
    let decimals = (2.0 - span.max(1e-12).log10().floor()).clamp(0.0, 6.0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

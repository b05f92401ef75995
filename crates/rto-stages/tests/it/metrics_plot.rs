//! metrics.png and the helpers of the plot and `show`: the same records give the same bytes
//! (wall-clock numbers do not enter), the grid has a row per two panels with data, and tick
//! labels, smoothing and sparklines give hand-computed results.

use rto_stages::metrics::plot::{smoothed, tick, write_png};
use rto_stages::metrics::show::{number, sparkline};
use rto_stages::metrics::view;
use serde_json::{json, Value};
use std::path::Path;

fn records(steps: i64, clock: f64) -> Vec<Value> {
    (1..=steps)
        .map(|s| {
            let mut r = json!({"step": s, "epoch": 0, "lr": 1e-3, "train/loss": 2.0 / s as f64,
                "train/rewards/accuracies": 0.5 + 0.01 * s as f64, "train/tokens_per_s": clock * s as f64,
                "time/total": clock});
            if s % 5 == 0 {
                r["eval/loss"] = json!(1.0 / s as f64);
            }
            r
        })
        .collect()
}

fn png(path: &Path, records: &[Value]) -> Vec<u8> {
    write_png(path, "dpo 0123456789ab", view("dpo").unwrap(), records).unwrap();
    std::fs::read(path).unwrap()
}

/// (width, height) from the PNG's IHDR chunk.
fn size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn the_plot_depends_on_the_records_and_not_on_the_clock() {
    let work = tempfile::tempdir().unwrap();
    let first = png(&work.path().join("a.png"), &records(80, 1.0));
    let again = png(&work.path().join("b.png"), &records(80, 1.0));
    assert_eq!(first, again, "same records, same bytes");
    let other_clock = png(&work.path().join("c.png"), &records(80, 7.5));
    assert_eq!(first, other_clock, "tokens_per_s and time/* are not drawn");
    let mut changed = records(80, 1.0);
    changed[40]["train/loss"] = json!(3.0);
    assert_ne!(first, png(&work.path().join("d.png"), &changed), "a changed loss shows");
    // DPO with loss and accuracy only: 2 panels with data (margins and rewards are absent)
    // make one row of 340 pixels under the 44-pixel title.
    assert_eq!(size(&first), (1200, 44 + 340));
}

#[test]
fn panels_without_data_are_left_out_of_the_grid() {
    let work = tempfile::tempdir().unwrap();
    let only_loss: Vec<Value> = (1..=3).map(|s| json!({"step": s, "train/loss": 1.0})).collect();
    assert_eq!(size(&png(&work.path().join("one.png"), &only_loss)), (1200, 44 + 340));
    let all: Vec<Value> = (1..=3)
        .map(|s| {
            json!({"step": s, "train/loss": 1.0, "train/rewards/accuracies": 0.5, "train/rewards/margins": 0.1,
                "train/rewards/chosen": -0.1})
        })
        .collect();
    assert_eq!(size(&png(&work.path().join("four.png"), &all)), (1200, 44 + 2 * 340));
    assert_eq!(size(&png(&work.path().join("none.png"), &[])), (1200, 44 + 340), "an empty log still draws");
}

#[test]
fn tick_labels_have_the_digits_the_axis_needs() {
    assert_eq!(tick(100.0, 475.0), "100");
    assert_eq!(tick(0.65, 0.5), "0.65");
    assert_eq!(tick(3.5, 2.5), "3.5");
    assert_eq!(tick(2.5e-5, 1e-4), "2.50e-5");
    assert_eq!(tick(0.1 + 0.2 - 0.3, 0.8), "0", "float noise at zero");
    assert_eq!(tick(-0.2, 1.4), "-0.2");
}

#[test]
fn smoothing_is_a_centred_moving_average() {
    let points: Vec<(f64, f64)> = (0..4).map(|i| (i as f64, 3.0 * i as f64)).collect();
    // Fewer than 60 points: one neighbour on each side, fewer at the ends.
    assert_eq!(smoothed(&points), [(0.0, 1.5), (1.0, 3.0), (2.0, 6.0), (3.0, 7.5)]);
    let long: Vec<(f64, f64)> = (0..90).map(|i| (i as f64, if i == 45 { 7.0 } else { 0.0 })).collect();
    let smooth = smoothed(&long);
    // 90 points: 3 on each side, so the spike spreads over 7 points at 1.0 each.
    assert_eq!(smooth.iter().filter(|p| p.1 > 0.0).count(), 7);
    assert_eq!(smooth[45], (45.0, 1.0));
}

#[test]
fn sparklines_scale_bucket_means_from_lowest_to_highest() {
    assert_eq!(sparkline(&[1.0, 2.0, 3.0, 4.0], 32), "▁▃▆█");
    // 8 values in 4 buckets: means 0, 1, 2, 3.
    assert_eq!(sparkline(&[0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0], 4), "▁▃▆█");
    assert_eq!(sparkline(&[5.0, 5.0], 32), "▄▄", "a flat curve sits in the middle");
    assert_eq!(number(Some(476.0)), "476");
    assert_eq!(number(Some(0.61503)), "0.6150");
    assert_eq!(number(Some(2.0e-5)), "2.000e-5");
    assert_eq!(number(None), "-");
}

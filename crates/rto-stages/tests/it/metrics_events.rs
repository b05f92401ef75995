//! TensorBoard event files: the hand-written encoding against published CRC-32C check values
//! and a protobuf encoded by hand, then the metrics log's mirror read back by the tensorboard
//! package's readers, through a kill-and-resume (no point lost, none twice).

use rto_stages::checkpoint::MetricsLog;
use rto_stages::metrics::tfevents::{crc32c, event, masked_crc, record, Payload};
use serde_json::{json, Value};
use std::path::Path;

/// What `tests/python/read_tfevents.py` makes of a run folder.
pub fn read_events(run_dir: &Path) -> Value {
    let out = rto_test_support::python_script("read_tfevents.py", &[run_dir.to_str().unwrap()]);
    serde_json::from_str(&out).expect("read_tfevents.py prints JSON")
}

/// The scalars TensorBoard must show for metrics records: every number but the axis
/// (`step`, PPO's `iteration`), at its record's step, as f32, sorted by (tag, step).
pub fn expected_scalars(records: &[Value]) -> Vec<(String, i64, f32)> {
    let mut out = Vec::new();
    for r in records {
        let step = r["step"].as_i64().unwrap();
        for (key, value) in r.as_object().unwrap() {
            if key != "step" && key != "iteration" {
                out.push((key.clone(), step, value.as_f64().unwrap() as f32));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

/// `[[tag, step, value], ...]` from the reader, sorted like [`expected_scalars`].
pub fn scalars_of(list: &Value) -> Vec<(String, i64, f32)> {
    let mut out: Vec<(String, i64, f32)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t[0].as_str().unwrap().to_string(), t[1].as_i64().unwrap(), t[2].as_f64().unwrap() as f32))
        .collect();
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

#[test]
fn crc32c_matches_the_published_check_values() {
    // The CRC catalogue's check value, and RFC 3720 appendix B.4.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8, mod 2^32, worked out by hand.
    assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
}

#[test]
fn an_event_is_the_protobuf_encoded_by_hand() {
    let values = [("a".to_string(), 2.0f32)];
    let bytes = event(1.5, 3, Payload::Scalars(&values));
    let mut expected = vec![0x09]; // field 1 (wall_time), fixed64
    expected.extend(1.5f64.to_le_bytes());
    expected.extend([0x10, 0x03]); // field 2 (step), varint 3
                                   // field 5 (summary), 10 bytes: field 1 (value), 8 bytes: tag "a", field 2 simple_value 2.0.
    expected.extend([0x2A, 0x0A, 0x0A, 0x08, 0x0A, 0x01, b'a', 0x15, 0x00, 0x00, 0x00, 0x40]);
    assert_eq!(bytes, expected);
    let version = event(0.0, 0, Payload::FileVersion);
    assert!(version.ends_with(b"\x1a\x0dbrain.Event:2"), "{version:?}");
    let start = event(0.0, 1, Payload::SessionStart);
    assert!(start.ends_with(&[0x10, 0x01, 0x3A, 0x02, 0x08, 0x01]), "{start:?}");
    let framed = record(b"xyz");
    assert_eq!(&framed[..8], &3u64.to_le_bytes());
    assert_eq!(&framed[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
    assert_eq!(&framed[12..15], b"xyz");
    assert_eq!(&framed[15..], &masked_crc(b"xyz").to_le_bytes());
}

fn record_at(step: i64, loss: f64) -> Value {
    json!({"step": step, "epoch": 0, "lr": 1e-3 * step as f64, "train/loss": loss, "eval/rewards/accuracies": 0.1})
}

fn write_run(jsonl: &Path, run: &Path, resume: usize, steps: std::ops::RangeInclusive<i64>, offset: f64) {
    let mut log = MetricsLog::open_with_tensorboard(jsonl, resume, Some(run)).unwrap();
    for step in steps {
        log.write(&record_at(step, offset + 1.0 / step as f64)).unwrap();
    }
}

/// A run killed after step 5 with its checkpoint at step 3 resumes from 3: TensorBoard then
/// shows steps 1–3 of the first run and 4–6 of the second, each once, exactly as metrics.jsonl.
#[test]
fn a_resumed_run_shows_each_step_once_in_tensorboard() {
    let work = tempfile::tempdir().unwrap();
    let (jsonl, run) = (work.path().join("metrics.jsonl"), work.path().join("tb/sft-0123"));
    write_run(&jsonl, &run, 0, 1..=5, 0.0);
    let first = std::fs::read_dir(&run).unwrap().next().unwrap().unwrap().path();
    let first_bytes = std::fs::read(&first).unwrap();
    write_run(&jsonl, &run, 3, 4..=6, 10.0);

    let records = rto_test_support::read_jsonl(&jsonl);
    let steps: Vec<i64> = records.iter().map(|r| r["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    assert_eq!(records[4]["train/loss"], json!(10.0 + 1.0 / 5.0), "step 5 comes from the resumed run");
    let events = read_events(&run);
    assert_eq!(events["files"].as_array().unwrap().len(), 1, "the killed run's file is replaced: {events}");
    assert_eq!(events["file_version"], json!(["brain.Event:2"]));
    assert_eq!(events["session_starts"], json!([1]));
    assert_eq!(scalars_of(&events["raw"]), expected_scalars(&records), "the file holds each point once");
    assert_eq!(scalars_of(&events["accumulated"]), expected_scalars(&records));

    // A reader that had loaded the killed run's file (or a kill between writing the new file
    // and deleting the old one) still ends with each point once: the new file's SessionLog
    // START drops what came before it.
    std::fs::write(&first, first_bytes).unwrap();
    let both = read_events(&run);
    assert_eq!(both["files"].as_array().unwrap().len(), 2);
    assert!(scalars_of(&both["raw"]).len() > expected_scalars(&records).len(), "the old file repeats steps");
    assert_eq!(scalars_of(&both["accumulated"]), expected_scalars(&records));
    // The next opening clears both.
    write_run(&jsonl, &run, 6, 7..=7, 0.0);
    assert_eq!(read_events(&run)["files"].as_array().unwrap().len(), 1);
}

/// A fresh run (resume step 0) starts an empty event file, like an empty metrics.jsonl; event
/// files that are not ours are left alone.
#[test]
fn a_fresh_run_starts_the_run_folder_over() {
    let work = tempfile::tempdir().unwrap();
    let (jsonl, run) = (work.path().join("metrics.jsonl"), work.path().join("run"));
    write_run(&jsonl, &run, 0, 1..=3, 0.0);
    std::fs::write(run.join("events.out.tfevents.123.other-host"), b"").unwrap();
    MetricsLog::open_with_tensorboard(&jsonl, 0, Some(&run)).unwrap();
    let events = read_events(&run);
    assert_eq!(events["files"].as_array().unwrap().len(), 2, "{events}");
    assert_eq!(events["raw"], json!([]));
    assert!(run.join("events.out.tfevents.123.other-host").exists());
}

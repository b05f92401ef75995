//! A reader must not fail while a `--force` run replaces the cached folder under the lock:
//! what the lock-free fast path sees then (a folder half-moved, files of the old and new
//! copies) is not a verdict; only a check made under the lock is.

use anyhow::Result;
use rto_data::store::{StageSpec, Store};
use serde_json::json;
use std::fs;
use std::sync::mpsc;

#[test]
fn a_reader_waits_for_a_force_run_repairing_the_folder_instead_of_failing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("runs"));
    let input = tmp.path().join("in.txt");
    fs::write(&input, "hello").unwrap();
    let spec = StageSpec::new("swap", 1, &json!({})).unwrap().with_input("data", &input);
    let write_out = |dir: &rto_data::store::StageDir| -> Result<serde_json::Value> {
        fs::write(dir.join("out.txt"), "HELLO")?;
        Ok(json!({}))
    };
    let first = store.run(&spec, false, write_out).unwrap();
    // The state a reader sees mid-swap: the folder no longer matches its manifest.
    fs::write(first.path.join("out.txt"), "half-replaced").unwrap();

    let (holding_tx, holding_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let (store, spec) = (&store, &spec);
        let writer = scope.spawn(move || {
            store.run(spec, true, |dir| {
                holding_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                write_out(dir)
            })
        });
        // The --force run now holds the stage lock; a plain run starts while it does.
        holding_rx.recv().unwrap();
        let reader = scope.spawn(move || {
            store.run(spec, false, |_| -> Result<serde_json::Value> { panic!("the reader must reuse, not compute") })
        });
        // Give a reader that would fail on the fast path the time to do so (it has no lock to
        // wait for); a correct one blocks on the lock until `go`. Not a timing assertion: a
        // slow machine can only make a broken store pass, never a correct one fail.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while !reader.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        go_tx.send(()).unwrap();
        let written = writer.join().unwrap().expect("the --force run succeeds");
        let read = reader
            .join()
            .unwrap()
            .expect("the reader must wait for the lock and reuse, not fail on the folder being replaced");
        assert!(read.reused && !written.reused);
        assert_eq!(read.path, written.path);
        assert_eq!(fs::read_to_string(read.path.join("out.txt")).unwrap(), "HELLO");
    });
}

#[test]
fn a_damaged_folder_with_no_writer_is_still_an_error_naming_force() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("runs"));
    let input = tmp.path().join("in.txt");
    fs::write(&input, "hello").unwrap();
    let spec = StageSpec::new("swap", 1, &json!({})).unwrap().with_input("data", &input);
    let first = store
        .run(&spec, false, |dir| -> Result<serde_json::Value> {
            fs::write(dir.join("out.txt"), "HELLO")?;
            Ok(json!({}))
        })
        .unwrap();
    fs::write(first.path.join("out.txt"), "tampered").unwrap();
    let before: Vec<_> = fs::read_dir(tmp.path().join("runs/swap")).unwrap().flatten().map(|e| e.file_name()).collect();
    let err = store.run(&spec, false, |_| -> Result<serde_json::Value> { panic!("must not compute") }).unwrap_err();
    assert!(format!("{err:#}").contains("--force"), "{err:#}");
    let after: Vec<_> = fs::read_dir(tmp.path().join("runs/swap")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(before.len(), after.len(), "the failed lookup left files behind: {after:?}");
}

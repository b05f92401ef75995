//! A kill between publishing `ckpt/` and deleting `ckpt.old/` leaves both folders. The
//! resumed run must restore `ckpt/` and be able to save its next checkpoint (before the fix,
//! renaming `ckpt/` over the non-empty `ckpt.old/` failed, so such a run could never resume).

use rto_stages::checkpoint::Checkpointer;
use serde_json::json;
use std::fs;

fn plant(dir: &std::path::Path, step: u64) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("state.json"), serde_json::to_vec(&json!({"step": step, "state": null})).unwrap()).unwrap();
}

#[test]
fn a_kill_that_left_ckpt_and_ckpt_old_does_not_block_the_next_save() {
    let scratch = tempfile::tempdir().unwrap();
    plant(&scratch.path().join("ckpt"), 4);
    plant(&scratch.path().join("ckpt.old"), 2);
    let checkpointer = Checkpointer::new(scratch.path());
    let restored = checkpointer.restore(&mut [], &mut []).unwrap().expect("a checkpoint");
    assert_eq!(restored.step, 4, "the newer, complete checkpoint wins");
    checkpointer.save(6, &[], &[], json!(null)).expect("saving after the interrupted cleanup");
    let again = checkpointer.restore(&mut [], &mut []).unwrap().expect("a checkpoint");
    assert_eq!(again.step, 6);
    assert!(!scratch.path().join("ckpt.old").exists(), "the stale ckpt.old is gone");
}

"""Reads a TensorBoard run folder with the tensorboard package's own readers, for the Rust tests.

Usage: read_tfevents.py RUN_DIR
Prints JSON: {"files": [names of the event files],
              "accumulated": [[tag, step, value], ...]  (EventAccumulator: what TensorBoard shows,
                                                          after its purge of orphaned points),
              "raw": [[tag, step, value], ...]          (every scalar of every file, in order),
              "file_version": [...], "session_starts": [steps of SessionLog START events]}
"""

import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader


def main(run_dir):
    files = sorted(f for f in os.listdir(run_dir) if "tfevents" in f)
    raw, versions, starts = [], [], []
    for name in files:
        for event in event_file_loader.LegacyEventFileLoader(os.path.join(run_dir, name)).Load():
            if event.HasField("file_version"):
                versions.append(event.file_version)
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                starts.append(event.step)
            for value in event.summary.value:
                raw.append([value.tag, event.step, value.simple_value])
    # size_guidance 0: keep every point (the default samples 10,000 per tag).
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    accumulated = [
        [tag, s.step, s.value] for tag in sorted(acc.Tags()["scalars"]) for s in acc.Scalars(tag)
    ]
    print(json.dumps({"files": files, "accumulated": accumulated, "raw": raw,
                      "file_version": versions, "session_starts": starts}))


if __name__ == "__main__":
    main(sys.argv[1])

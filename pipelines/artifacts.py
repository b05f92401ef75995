"""The blake3 of every published artifact, and the check that a run reproduced them.

`write` lists, in b3sum's format (`<blake3>  <stage>/<key>/<file>`, paths relative to the
store), every file of the given stage folders and of the store folders they were computed from
(their manifests' inputs, followed to the root), except the metrics logs, which hold wall-clock
times. `check` recomputes them in a store: a missing folder means a different key (other
settings or inputs), a different hash means the same settings computed other bytes (another CPU
code path: run in reproducible mode, RTO_REPRODUCIBLE=1, which `make demo` and `make replicate`
set). `cd runs && b3sum --check ../results/demo.blake3` is the same check without this script.

The list goes to STORE/NAME.blake3, the run's own; with RTO_PUBLISH=1 (the maintainer
regenerating the published results) to results/NAME.blake3, the committed list that `check`
compares a store against: a user's run never rewrites what it is checked against.

    pipelines/artifacts.py write --store runs --name demo FOLDER...
    pipelines/artifacts.py check [--store runs] [results/*.blake3 ...]     # make check-results
"""
import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Files whose bytes hold wall-clock data (never reproducible), left out of the list.
WALL_CLOCK_FILES = {"metrics.jsonl"}


def blake3_file(path):
    import blake3  # in the venv (Makefile); imported here so `write` needs only the manifests

    h = blake3.blake3()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(folder):
    return json.load(open(os.path.join(folder, "manifest.json")))


def folder_of_key(store, key):
    hits = glob.glob(os.path.join(store, "*", key))
    return hits[0] if hits else None


def closure(store, folders):
    """The given stage folders and every store folder they were computed from."""
    seen, todo = {}, [os.path.realpath(f) for f in folders]
    while todo:
        folder = todo.pop()
        m = manifest(folder)
        if m["key"] in seen:
            continue
        seen[m["key"]] = folder
        for entry in m.get("inputs", []):
            upstream = folder_of_key(store, entry.get("key", ""))
            if upstream:
                todo.append(upstream)
    return seen


def lines_for(store, folders):
    lines = []
    for key, folder in sorted(closure(store, folders).items(), key=lambda kv: os.path.relpath(kv[1], store)):
        rel_folder = os.path.relpath(folder, os.path.realpath(store))
        for name, digest in sorted(manifest(folder)["files"].items()):
            if os.path.basename(name) not in WALL_CLOCK_FILES:
                lines.append(f"{digest}  {rel_folder}/{name}")
    return lines


def list_path(store, name):
    """Where `write` puts list `name`: results/ with RTO_PUBLISH=1, else the store."""
    publish = os.environ.get("RTO_PUBLISH") == "1"
    return os.path.join(ROOT, "results" if publish else store, f"{name}.blake3")


def write(store, name, folders):
    """Writes list `name` for `folders` (the manifests' hashes, which the store verified)."""
    out = list_path(store, name)
    lines = lines_for(store, folders)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{out}: {len(lines)} artifact hashes", file=sys.stderr)


def check(store, lists):
    """Recomputes every listed file in `store`; returns the number of mismatches."""
    bad = checked = 0
    for path in lists:
        for line in open(path):
            if not line.strip():
                continue
            want, rel = line.rstrip("\n").split("  ", 1)
            file = os.path.join(store, rel)
            checked += 1
            if not os.path.exists(file):
                print(f"MISSING  {rel} (listed in {path}): no such output in {store}: "
                      "a different key, i.e. other settings or inputs, or the run was not made", file=sys.stderr)
                bad += 1
            elif blake3_file(file) != want:
                print(f"DIFFERS  {rel} (listed in {path}): same key, other bytes "
                      "(run in reproducible mode: RTO_REPRODUCIBLE=1)", file=sys.stderr)
                bad += 1
    print(f"checked {checked} artifacts in {store}: {checked - bad} identical, {bad} not", file=sys.stderr)
    return bad


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--store", default=os.path.join(ROOT, "runs"))
    w.add_argument("--name", required=True, help="the list's name: NAME.blake3")
    w.add_argument("folders", nargs="+")
    c = sub.add_parser("check")
    c.add_argument("--store", default=os.path.join(ROOT, "runs"))
    c.add_argument("lists", nargs="*")
    a = p.parse_args()
    if a.cmd == "write":
        write(a.store, a.name, a.folders)
        return 0
    lists = a.lists or sorted(glob.glob(os.path.join(ROOT, "results", "*.blake3")))
    if not lists:
        raise SystemExit("no results/*.blake3 to check: run `make demo` or `make replicate` first")
    return 1 if check(a.store, lists) else 0


if __name__ == "__main__":
    sys.exit(main())

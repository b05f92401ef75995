"""Prints the evaluation table of the demo: one row per rto-eval output folder."""
import json
import os
import sys


def main(folders):
    rows = [json.load(open(os.path.join(f, "results.json"))) for f in folders]
    print(f"{'method':<10} {'win rate vs SFT':>16} {'gold score':>11} {'SFT gold':>9} {'length':>7}")
    for r in rows:
        print(f"{r['generator']:<10} {r['win_rate']:>16.3f} {r['mean_gold_score']:>11.3f} "
              f"{r['baseline_mean_gold_score']:>9.3f} {r['mean_length']:>7.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])

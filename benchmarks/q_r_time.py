"""Wall time of the README's main job, `koala-sweep launch studies/q_r.yaml`, from a clean
working directory (a fresh SQLite store, a fresh local Ray), against its goal of 15 minutes on
the project's 2-core CPU machine. Prints JSON and a one-line summary.

    python benchmarks/q_r_time.py [--study studies/q_r.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from _launch import launch

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 15 * 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "q_r.yaml"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        out = launch(args.study, work)
        seconds = time.perf_counter() - t0
        states: dict[str, int] = {}
        db = Path(work) / "runs" / "koala_sweep.db"
        if db.exists():
            with sqlite3.connect(db) as conn:
                states = dict(
                    conn.execute(
                        "SELECT state, count(*) FROM koala_trial GROUP BY state"
                    ).fetchall()
                )
    report = {
        "benchmark": "q_r_time",
        "command": "python benchmarks/q_r_time.py " + " ".join(argv or sys.argv[1:]),
        "study": args.study,
        "returncode": out.returncode,
        "wall_seconds": round(seconds, 1),
        "goal_seconds": GOAL_SECONDS,
        "goal_met": out.returncode == 0 and seconds <= GOAL_SECONDS,
        "trials_by_state": states,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    print(
        f"{Path(args.study).name}: {seconds / 60:.1f} min (goal {GOAL_SECONDS / 60:.0f} min: "
        f"{'met' if report['goal_met'] else 'NOT met'}); trials {states}",
        file=sys.stderr,
    )
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
    return 0 if out.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Store throughput: writing 1,000,000 per-epoch metric rows, and reading the tidy frames of a
study of 10,000 trials x 50 epochs, on SQLite and on PostgreSQL.

Rows go through the store's own writer (``StoreWriter``: one transaction per trial start and
finish, metric rows in batches of ``--batch`` rows) and the frames through its readers, the
same code the launcher, the reports and the dashboard use. PostgreSQL needs a server: pass
``--postgres URL`` (a database the script may fill), or run as root on a machine with
PostgreSQL 15, where the script starts a throwaway server on 127.0.0.1 and removes it after.

    python benchmarks/store.py [--trials 10000] [--epochs 50] [--postgres URL] [--no-postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from koala_sweep.store import epoch_row, mask_url, open_store

PG_BIN = Path("/usr/lib/postgresql/15/bin")
GOAL_READ_SECONDS = 2.0


def _fill(store, study: str, trials: int, epochs: int, batch: int) -> float:
    w = store.writer
    sid = w.create_study(
        study,
        f"name: {study}\n",
        workload="fashion_mnist_cnn",
        metric="val_loss",
        direction="minimize",
        package_versions={},
        device="cpu",
    )
    aids = [
        w.add_arm(
            sid,
            arm,
            optimizer=arm,
            search_space={},
            budget=trials // 3 + 1,
            optuna_study_name=f"{study}/{arm}",
        )
        for arm in ("koalapp", "adam", "sgd")
    ]
    t0 = time.perf_counter()
    pending: list[dict] = []
    for n in range(trials):
        tid = w.start_trial(
            aids[n % 3],
            {"lr": 0.1 + n * 1e-5, "q": 0.01, "r": "adaptive"},
            seed=n % 3,
            optuna_trial_number=n // 3,
        )
        for e in range(1, epochs + 1):
            pending.append(
                epoch_row(
                    tid,
                    e,
                    {
                        "train_loss": 1.0 / e,
                        "val_loss": 1.2 / e,
                        "val_accuracy": 0.5 + e / 200,
                        "epoch_seconds": 3.0,
                        "step_seconds": 0.2,
                        "samples_per_second": 3000.0,
                        "lr": 0.1,
                        "koala_s_min": 0.3,
                        "koala_lambda_mean": -0.05,
                        "koala_r": 0.6,
                    },
                )
            )
        if len(pending) >= batch:
            w.record_epochs(pending)
            pending = []
        w.finish_trial(tid, "COMPLETE", value=1.2 / epochs, epochs=epochs)
    w.record_epochs(pending)
    return time.perf_counter() - t0


def measure(url: str, trials: int, epochs: int, batch: int) -> dict:
    store = open_store(url)
    # Two studies of trials x epochs rows each: 2 x 10,000 x 50 = 1,000,000 metric rows.
    write_a = _fill(store, "bench_a", trials, epochs, batch)
    write_b = _fill(store, "bench_b", trials, epochs, batch)
    store.dispose()
    # Each read opens the store afresh, as a report or a dashboard refresh does; the first
    # read comes right after the writes, the median of three is the figure compared with
    # the goal (this machine's timings wander by tens of percent).
    reads = []
    for _ in range(3):
        reader = open_store(url, create=False)
        t0 = time.perf_counter()
        t_frame = reader.trials("bench_a")
        t_trials = time.perf_counter() - t0
        m_frame = reader.metrics("bench_a")
        t_total = time.perf_counter() - t0
        reader.dispose()
        reads.append((t_total, t_trials, t_total - t_trials))
    median = sorted(reads)[1]
    rows = 2 * trials * epochs
    return {
        "metric_rows_written": rows,
        "write_seconds": round(write_a + write_b, 2),
        "rows_per_second_written": round(rows / (write_a + write_b)),
        "read_frames_seconds_first": round(reads[0][0], 3),
        "read_frames_seconds": round(median[0], 3),
        "read_trials_frame_seconds": round(median[1], 3),
        "read_metrics_frame_seconds": round(median[2], 3),
        "frame_rows": [len(t_frame), len(m_frame)],
        "read_goal_met": median[0] < GOAL_READ_SECONDS,
    }


@contextlib.contextmanager
def throwaway_postgres():
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        raise RuntimeError("no PostgreSQL 15 server binaries, or not root: pass --postgres URL")
    base = Path(tempfile.mkdtemp(prefix="koala-bench-pg-"))
    shutil.chown(base, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def as_postgres(cmd: str) -> None:
        subprocess.run(["su", "postgres", "-c", cmd], check=True, capture_output=True)

    as_postgres(f"{PG_BIN}/initdb -D {base}/data -U postgres -A trust")
    as_postgres(
        f"{PG_BIN}/pg_ctl -D {base}/data -l {base}/log -w -o "
        f"'-p {port} -k {base} -c listen_addresses=127.0.0.1' start"
    )
    try:
        as_postgres(f"{PG_BIN}/createdb -h 127.0.0.1 -p {port} -U postgres bench")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/bench"
    finally:
        as_postgres(f"{PG_BIN}/pg_ctl -D {base}/data -m fast -w stop")
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch", type=int, default=5000, help="metric rows per transaction")
    parser.add_argument("--postgres", default=None, help="URL of a database to use")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    report = {
        "benchmark": "store",
        "command": "python benchmarks/store.py " + " ".join(argv or sys.argv[1:]),
        "machine": platform.machine(),
        "trials_per_study": args.trials,
        "epochs_per_trial": args.epochs,
        "goal_read_frames_seconds": GOAL_READ_SECONDS,
        "backends": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["backends"]["sqlite"] = measure(
            f"sqlite:///{tmp}/bench.db", args.trials, args.epochs, args.batch
        )
    if not args.no_postgres:
        if args.postgres:
            report["backends"]["postgresql"] = measure(
                args.postgres, args.trials, args.epochs, args.batch
            )
            report["postgres_url"] = mask_url(args.postgres)
        else:
            with throwaway_postgres() as url:
                report["backends"]["postgresql"] = measure(
                    url, args.trials, args.epochs, args.batch
                )
    print(json.dumps(report, indent=2))
    for name, r in report["backends"].items():
        print(
            f"{name}: wrote {r['metric_rows_written']:,} metric rows in {r['write_seconds']} s "
            f"({r['rows_per_second_written']:,}/s); read the frames of {args.trials:,} trials "
            f"x {args.epochs} epochs in {r['read_frames_seconds']} s (median of 3; first "
            f"{r['read_frames_seconds_first']} s) "
            f"(goal < {GOAL_READ_SECONDS} s: {'met' if r['read_goal_met'] else 'NOT met'})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

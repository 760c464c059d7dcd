"""What the orchestration costs: `koala-sweep launch` (Ray Tune, Optuna through the store, the
store callback) against a plain `optuna` `study.optimize` loop running the same training, the
same budget and the same sampler seed on the same machine.

Both are timed as whole commands, each in a fresh process from interpreter start to exit
(imports and data loading included), and run one trial at a time with the same threads, so the
difference is the orchestration: starting Ray and a trial worker, scheduling, reporting every
epoch through Tune, writing the store. The goal is at most 1.10x the plain loop's wall time for
20 trials of about 10 s each. CPU utilisation is the share of the machine's CPU time that was
busy during each run (from /proc/stat). The summary splits the difference in two: the time
the same training epochs took longer under the launch (each side's training loop times its
epochs; Ray's own processes share the CPUs with the trial) and the rest (starting and stopping
Ray and the first worker, scheduling, reporting). It also counts how often the process that
trains was preempted (involuntary context switches of all its threads, read from /proc every
half second, per second of its life): the trial's OpenMP threads want every core, so each
wake-up of another process takes a core from one of them while the other waits for it at the
next barrier. With ``--repeats N`` the two take turns (plain first in odd rounds, launch first
in even ones) and the median ratio is reported.

    python benchmarks/orchestration.py              # 20 trials of about 10 s (about 7 minutes)
    python benchmarks/orchestration.py --repeats 3  # three rounds, median ratio
    python benchmarks/orchestration.py --quick      # 3 tiny trials, for the tests
Prints one JSON document on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _launch import failed, launch  # noqa: E402

GOAL_MAX_RATIO = 1.10
FULL = {
    "trials": 20,
    "epochs": 5,
    "workload_args": {"train_size": 8000, "val_size": 1000, "batch_size": 128},
}
QUICK = {
    "trials": 3,
    "epochs": 1,
    "workload_args": {"train_size": 256, "val_size": 128, "batch_size": 64},
}
LR_RANGE = (0.0001, 0.01)
SAMPLER_SEED = 7
THREADS = 2


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields), idle


def _busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total, idle = after[0] - before[0], after[1] - before[1]
    return 1.0 - idle / total if total else math.nan


class Preemptions:
    """Involuntary context switches of the processes that train, sampled from /proc in a
    background thread: the newest count of each process (all its threads) and how long it had
    lived then."""

    def __init__(self, matches) -> None:
        self._matches = matches
        self._seen: dict[int, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Preemptions:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
                try:
                    if not self._matches(pid):
                        continue
                    count = sum(
                        int(line.split()[1])
                        for task in os.listdir(f"/proc/{pid}/task")
                        for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines()
                        if line.startswith("nonvoluntary_ctxt_switches")
                    )
                    self._seen[pid] = (count, _age_seconds(pid))
                except (OSError, ValueError):  # the process or a thread ended meanwhile
                    continue

    def per_second(self) -> float:
        switches = sum(c for c, _ in self._seen.values())
        seconds = sum(a for _, a in self._seen.values())
        return switches / seconds if seconds > 0 else math.nan


def _age_seconds(pid: int) -> float:
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


def _is_trial_worker(pid: int) -> bool:
    # Ray names a worker process after the actor it hosts (tune.with_resources wraps ours).
    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    return title.startswith((b"ray::ResourceTrainable", b"ray::TrainConfiguration"))


def study_yaml(cfg: dict) -> str:
    args = ", ".join(f"{k}: {v}" for k, v in cfg["workload_args"].items())
    return (
        "name: orchestration_benchmark\n"
        "workload: fashion_mnist_cnn\n"
        f"workload_args: {{{args}}}\n"
        f"epochs: {cfg['epochs']}\n"
        "metric: val_loss\ndirection: minimize\nseeds: [0]\n"
        f"sampler: {{name: tpe, seed: {SAMPLER_SEED}}}\n"
        "pruner: {name: none}\n"
        f"resources: {{cpu: {THREADS}, gpu: 0}}\n"
        "max_concurrent_trials: 1\n"
        "arms:\n  adam:\n    optimizer: adam\n"
        f"    trials: {cfg['trials']}\n"
        f"    params: {{lr: {{log_uniform: [{LR_RANGE[0]}, {LR_RANGE[1]}]}}}}\n"
    )


def run_launch(cfg: dict, workdir: Path) -> dict:
    study = workdir / "study.yaml"
    study.write_text(study_yaml(cfg))
    url = f"sqlite:///{workdir}/store.db"
    cpu0, t0 = _cpu_times(), time.perf_counter()
    with Preemptions(_is_trial_worker) as preemptions:
        out = launch(study, workdir, url)
    wall, cpu1 = time.perf_counter() - t0, _cpu_times()
    if out.returncode != 0:
        raise failed(out, "koala-sweep launch")
    from koala_sweep.store import open_store

    store = open_store(url, create=False)
    trials = store.trials("orchestration_benchmark")
    epochs = store.metrics("orchestration_benchmark")["epoch_seconds"]
    return {
        "wall_seconds": wall,
        "cpu_busy_share": _busy_share(cpu0, cpu1),
        "trials": len(trials),
        "best_value": float(trials["value"].min()),
        "epoch_seconds_total": float(epochs.sum()),
        "trial_preemptions_per_second": preemptions.per_second(),
    }


def plain_loop(cfg: dict) -> dict:
    """The peer: what a user would write with Optuna alone (runs in its own process)."""
    import optuna
    import torch

    from koala_sweep.workloads.loop import run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(THREADS)

    epoch_seconds: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", *LR_RANGE, log=True)
        value = math.nan
        for report in run_trial(
            "fashion_mnist_cnn",
            "adam",
            {"lr": lr},
            epochs=cfg["epochs"],
            seed=0,
            workload_args=cfg["workload_args"],
            device="cpu",
        ):
            value = report.metrics["val_loss"]
            epoch_seconds.append(report.metrics["epoch_seconds"])
            trial.report(value, report.epoch)
        return value

    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=SAMPLER_SEED)
    )
    study.optimize(objective, n_trials=cfg["trials"])
    return {
        "trials": len(study.trials),
        "best_value": study.best_value,
        "epoch_seconds_total": sum(epoch_seconds),
    }


def run_plain_optuna(quick: bool) -> dict:
    command = [sys.executable, __file__, "--plain-loop", *(["--quick"] if quick else [])]
    cpu0, t0 = _cpu_times(), time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    with Preemptions(lambda pid: pid == process.pid) as preemptions:
        stdout, stderr = process.communicate()
    wall, cpu1 = time.perf_counter() - t0, _cpu_times()
    if process.returncode != 0:
        raise RuntimeError("the plain Optuna loop failed:\n" + stderr[-3000:])
    return {
        "wall_seconds": wall,
        "cpu_busy_share": _busy_share(cpu0, cpu1),
        **json.loads(stdout),
        "trial_preemptions_per_second": preemptions.per_second(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="rounds, taking turns")
    parser.add_argument("--plain-loop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.plain_loop:
        print(json.dumps(plain_loop(cfg)))
        return 0
    rounds = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="koala-orchestration-") as tmp:
            if i % 2 == 0:
                plain = run_plain_optuna(args.quick)
                launched = run_launch(cfg, Path(tmp))
            else:
                launched = run_launch(cfg, Path(tmp))
                plain = run_plain_optuna(args.quick)
        rounds.append(
            {
                "plain_optuna": plain,
                "koala_sweep_launch": launched,
                "wall_ratio": launched["wall_seconds"] / plain["wall_seconds"],
                # The part of the difference spent in slower training epochs (the same epochs
                # timed by the training loop in both): Ray's own processes share the CPUs.
                "slower_epochs_seconds": launched["epoch_seconds_total"]
                - plain["epoch_seconds_total"],
            }
        )
    ratio = statistics.median(r["wall_ratio"] for r in rounds)
    middle = min(rounds, key=lambda r: abs(r["wall_ratio"] - ratio))
    plain, launched = middle["plain_optuna"], middle["koala_sweep_launch"]
    difference = launched["wall_seconds"] - plain["wall_seconds"]
    in_epochs = middle["slower_epochs_seconds"]
    report = {
        "benchmark": "orchestration",
        "command": "python benchmarks/orchestration.py " + " ".join(argv or sys.argv[1:]),
        "setup": {
            **cfg,
            "sampler": f"tpe seed {SAMPLER_SEED}",
            "threads": THREADS,
            "concurrency": 1,
            "timed": "each command whole, in a fresh process (imports and data loading included)",
        },
        "rounds": rounds,
        "plain_optuna": plain,
        "koala_sweep_launch": launched,
        "wall_ratio": ratio,
        "goal_max_ratio": GOAL_MAX_RATIO,
    }
    print(json.dumps(report, indent=2))
    verdict = "meets" if ratio <= GOAL_MAX_RATIO else "misses"
    per_trial = plain["wall_seconds"] / max(plain["trials"], 1)
    of_rounds = f", median of {len(rounds)} rounds" if len(rounds) > 1 else ""
    print(
        f"orchestration: {cfg['trials']} trials of about {per_trial:.0f} s: koala-sweep launch "
        f"{launched['wall_seconds']:.1f} s against a plain Optuna loop "
        f"{plain['wall_seconds']:.1f} s = {ratio:.3f}x{of_rounds} ({verdict} the "
        f"{GOAL_MAX_RATIO}x goal); of the {difference:.1f} s more, {in_epochs:.1f} s in slower "
        f"training epochs, {difference - in_epochs:.1f} s outside them; same best value: "
        f"{'yes' if launched['best_value'] == plain['best_value'] else 'no'}; CPU busy "
        f"{launched['cpu_busy_share']:.0%} against {plain['cpu_busy_share']:.0%}; the training "
        f"process preempted {launched['trial_preemptions_per_second']:.0f} times a second "
        f"against {plain['trial_preemptions_per_second']:.0f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

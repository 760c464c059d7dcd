"""What Optuna's pruner buys: the same study launched with and without it (same sampler seed,
same budget of configurations): epochs run, wall time and the best value each found. The saving
and its cost in quality are both reported.

    python benchmarks/pruning.py           # 2 arms x 12 configurations x 4 epochs, twice
    python benchmarks/pruning.py --quick   # tiny, for the tests
Prints one JSON document on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _launch import failed, launch  # noqa: E402

FULL = {
    "trials": 12,
    "epochs": 4,
    "workload_args": "{train_size: 4000, val_size: 1000, batch_size: 128}",
}
QUICK = {
    "trials": 4,
    "epochs": 2,
    "workload_args": "{train_size: 256, val_size: 128, batch_size: 64}",
}
PRUNER = "{name: median, n_startup_trials: 3, n_warmup_steps: 1}"


def study_yaml(name: str, cfg: dict, pruner: str) -> str:
    return f"""name: {name}
workload: fashion_mnist_cnn
workload_args: {cfg["workload_args"]}
epochs: {cfg["epochs"]}
metric: val_loss
direction: minimize
seeds: [0]
sampler: {{name: tpe, seed: 7}}
pruner: {pruner}
resources: {{cpu: 1, gpu: 0}}
max_concurrent_trials: 2
arms:
  koalapp:
    optimizer: koalapp
    trials: {cfg["trials"]}
    params:
      lr: {{log_uniform: [0.05, 4.0]}}
      q: {{log_uniform: [0.001, 1.0]}}
      r: {{log_uniform: [0.001, 10.0]}}
      variant: {{choice: [vanilla, symmetric]}}
  adam:
    optimizer: adam
    trials: {cfg["trials"]}
    params: {{lr: {{log_uniform: [0.0001, 0.03]}}}}
"""


def run(name: str, cfg: dict, pruner: str, workdir: Path) -> dict:
    from koala_sweep.analysis import configurations, pruning_savings
    from koala_sweep.store import open_store

    study = workdir / f"{name}.yaml"
    study.write_text(study_yaml(name, cfg, pruner))
    url = f"sqlite:///{workdir}/store.db"
    t0 = time.perf_counter()
    out = launch(study, workdir, url)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise failed(out, f"koala-sweep launch of {name}")
    trials = open_store(url, create=False).trials(name)
    configs = configurations(trials)
    complete = configs[configs["state"] == "COMPLETE"]
    per_arm = {}
    for arm, group in complete.groupby("arm"):
        per_arm[arm] = float(group["value"].min())
    savings = pruning_savings(configs, cfg["epochs"])
    return {
        "wall_seconds": wall,
        "epochs_run": int(savings["epochs_run"].sum()),
        "epochs_without_pruning": int(savings["epochs_without_pruning"].sum()),
        "states": {s: int(n) for s, n in configs["state"].value_counts().items()},
        "best_value_per_arm": per_arm,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="koala-pruning-") as tmp:
        pruned = run("with_pruner", cfg, PRUNER, Path(tmp))
        unpruned = run("without_pruner", cfg, "{name: none}", Path(tmp))
    report = {
        "benchmark": "pruning",
        "command": "python benchmarks/pruning.py " + " ".join(argv or sys.argv[1:]),
        "setup": {**cfg, "pruner": PRUNER, "sampler": "tpe seed 7", "arms": ["koalapp", "adam"]},
        "with_pruner": pruned,
        "without_pruner": unpruned,
        "epochs_saved_share": 1 - pruned["epochs_run"] / unpruned["epochs_run"],
        "wall_ratio": pruned["wall_seconds"] / unpruned["wall_seconds"],
        "best_value_difference": {
            arm: pruned["best_value_per_arm"].get(arm, float("nan")) - value
            for arm, value in unpruned["best_value_per_arm"].items()
        },
    }
    print(json.dumps(report, indent=2))
    diff = ", ".join(f"{a} {d:+.4f}" for a, d in report["best_value_difference"].items())
    print(
        f"pruning: {report['epochs_saved_share']:.0%} fewer epochs "
        f"({pruned['epochs_run']} against {unpruned['epochs_run']}), wall time "
        f"{report['wall_ratio']:.2f}x; best val_loss with pruning minus without: {diff}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

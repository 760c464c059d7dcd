"""A synthetic study of any size in a store, shaped like a real KOALA++ / Adam / SGD study:
searched spaces, seeds, pruned and diverged trials, per-epoch curves. The values come from a
known response surface plus noise, not from training: used to measure the report and the
dashboard at 10,000 trials, and by the tests where only the size matters.

    python benchmarks/synthetic_study.py --storage sqlite:///runs/synthetic.db --trials 2000
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from koala_sweep.store import open_store  # noqa: E402
from koala_sweep.store.writer import epoch_row  # noqa: E402

ARMS = {
    "koalapp": (
        "koalapp",
        {
            "lr": {"log_uniform": [0.05, 4.0]},
            "q": {"log_uniform": [0.001, 1.0]},
            "r": {"log_uniform": [0.001, 10.0]},
            "variant": {"choice": ["vanilla", "symmetric"]},
            "sigma": 0.1,
        },
    ),
    "adam": ("adam", {"lr": {"log_uniform": [0.0001, 0.03]}}),
    "sgd": ("sgd", {"lr": {"log_uniform": [0.001, 0.5]}, "momentum": 0.9}),
}
# Where each arm is best (log10 of lr) and how fast it gets worse away from it.
OPTIMUM = {
    "koalapp": (math.log10(0.3), 0.35),
    "adam": (math.log10(0.002), 0.25),
    "sgd": (math.log10(0.05), 0.3),
}


def spec_yaml(name: str, configurations: int, epochs: int, seeds: int) -> str:
    lines = [
        f"name: {name}",
        "workload: fashion_mnist_cnn",
        "workload_args: {train_size: 10000, val_size: 2000, batch_size: 128}",
        f"epochs: {epochs}",
        "metric: val_loss",
        "direction: minimize",
        f"seeds: {list(range(seeds))}",
        "sampler: {name: random, seed: 0}",
        "pruner: {name: median, n_startup_trials: 3, n_warmup_steps: 1}",
        "arms:",
    ]
    for arm, (optimizer, space) in ARMS.items():
        lines += [
            f"  {arm}:",
            f"    optimizer: {optimizer}",
            f"    trials: {configurations}",
            "    params:",
        ]
        for key, value in space.items():
            text = (
                f"{{{next(iter(value))}: {list(next(iter(value.values())))}}}"
                if isinstance(value, dict)
                else str(value)
            )
            lines.append(f"      {key}: {text.replace(chr(39), '')}")
    return "\n".join(lines) + "\n"


def _sample(rng, space: dict) -> dict:
    out = {}
    for key, value in space.items():
        if not isinstance(value, dict):
            out[key] = value
            continue
        kind, values = next(iter(value.items()))
        if kind == "log_uniform":
            out[key] = float(10 ** rng.uniform(math.log10(values[0]), math.log10(values[1])))
        else:
            out[key] = values[int(rng.integers(len(values)))]
    return out


def fill(
    url: str,
    name: str,
    configurations: int,
    epochs: int = 50,
    seeds: int = 1,
    seed: int = 0,
    batch: int = 20_000,
) -> int:
    """Write a finished study of ``configurations`` per arm (times ``seeds`` trials each);
    returns the number of trials written."""
    rng = np.random.default_rng(seed)
    store = open_store(url)
    w = store.writer
    sid = w.create_study(
        name,
        spec_yaml(name, configurations, epochs, seeds),
        workload="fashion_mnist_cnn",
        metric="val_loss",
        direction="minimize",
        package_versions={"synthetic": "benchmarks/synthetic_study.py"},
        device="cpu (synthetic)",
    )
    pending, trials = [], 0
    for arm, (optimizer, space) in ARMS.items():
        aid = w.add_arm(
            sid,
            arm,
            optimizer=optimizer,
            search_space=space,
            budget=configurations,
            optuna_study_name=f"{name}/{arm}",
        )
        center, width = OPTIMUM[arm]
        for number in range(configurations):
            params = _sample(rng, space)
            distance = (math.log10(params["lr"]) - center) / width
            if arm == "koalapp":
                distance = math.hypot(
                    distance,
                    (math.log10(params["q"]) + 1.5) / 2.0,
                    (math.log10(params["r"]) + 1.0) / 3.0,
                )
            final = 0.3 + 0.05 * distance**2 + (0.02 if params.get("variant") == "vanilla" else 0.0)
            diverged = distance > 2.8 and rng.random() < 0.7
            pruned = not diverged and final > 0.45 and rng.random() < 0.6
            stop = int(rng.integers(1, epochs)) if (diverged or pruned) else epochs
            for s in range(seeds):
                tid = w.start_trial(aid, params, seed=s, optuna_trial_number=number)
                value = final + rng.normal(0, 0.01)
                for e in range(1, stop + 1):
                    loss = value + (2.3 - value) * math.exp(-3.0 * e / epochs)
                    pending.append(
                        epoch_row(
                            tid,
                            e,
                            {
                                "train_loss": loss * 0.95,
                                "val_loss": loss,
                                "val_accuracy": 1 - loss / 3,
                                "epoch_seconds": 3.0 + rng.random(),
                                "step_seconds": 0.04 * (1.1 if arm == "koalapp" else 1.0),
                                "samples_per_second": 3000.0,
                                "lr": params["lr"],
                            },
                        )
                    )
                if len(pending) >= batch:
                    w.record_epochs(pending)
                    pending = []
                last = value + (2.3 - value) * math.exp(-3.0 * stop / epochs)
                if diverged:
                    w.finish_trial(
                        tid, "DIVERGED", value=None, epochs=stop, error="train_loss is nan"
                    )
                else:
                    w.finish_trial(tid, "PRUNED" if pruned else "COMPLETE", value=last, epochs=stop)
                trials += 1
    w.record_epochs(pending)
    store.dispose()
    return trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--name", default="synthetic")
    parser.add_argument("--trials", type=int, default=2000, help="trials in all (3 arms)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    per_arm = max(args.trials // (3 * args.seeds), 1)
    n = fill(args.storage, args.name, per_arm, args.epochs, args.seeds)
    print(f"wrote study {args.name}: {n} trials x up to {args.epochs} epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

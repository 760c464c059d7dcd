"""Seconds per training epoch of every workload at its default arguments, on this machine.

Each workload trains one epoch with Adam through the shared loop (``run_trial``) and reports the
loop's own ``epoch_seconds`` (training only, no evaluation). Data that cannot be had offline is
replaced by stand-ins of the real shape, and the report says so:
- CIFAR: random images in CIFAR's file format; an epoch of ``--cifar-images`` images is timed
  and scaled to the real 50,000 (the cost of a ResNet does not depend on the pixel values).
- WikiText-2: a random corpus with WikiText-2's vocabulary size (33,278 words); the default
  epoch is a fixed number of steps, so its cost depends on the vocabulary, not the text.

    python benchmarks/workload_cost.py [--device cpu|cuda] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from koala_sweep.workloads import WORKLOADS
from koala_sweep.workloads.loop import run_trial

WIKITEXT2_VOCAB = 33278
CIFAR_TRAIN_IMAGES = 50000


def _stand_in_cifar(root: Path, classes: int, n: int) -> None:
    rng = np.random.default_rng(0)
    if classes == 10:
        folder, train, test, key = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            b"labels",
        )
    else:
        folder, train, test, key = "cifar-100-python", ["train"], ["test"], b"fine_labels"
    base = root / folder
    base.mkdir(parents=True, exist_ok=True)
    for names, count in ((train, -(-n // len(train))), (test, 100)):
        for name in names:
            batch = {
                b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                key: rng.integers(0, classes, count).tolist(),
            }
            with open(base / name, "wb") as f:
                pickle.dump(batch, f, protocol=2)


def _stand_in_wikitext(root: Path) -> None:
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(WIKITEXT2_VOCAB - 2)])
    d = root / "wikitext-2"
    d.mkdir(parents=True, exist_ok=True)
    for name, tokens in (
        ("wiki.train.tokens", 400_000),
        ("wiki.valid.tokens", 60_000),
        ("wiki.test.tokens", 60_000),
    ):
        words = rng.choice(vocab, size=tokens)
        lines = [" ".join(words[i : i + 20]) for i in range(0, tokens, 20)]
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def measure(name: str, device: str, scratch: Path, cifar_images: int) -> dict:
    args: dict = {}
    note = "real data, default arguments"
    scale = 1.0
    if name.startswith("cifar"):
        classes = 10 if name.startswith("cifar10_") else 100
        root = scratch / f"cifar{classes}"
        if not root.exists():
            _stand_in_cifar(root, classes, cifar_images)
        args = {
            "data_root": str(root),
            "train_size": cifar_images,
            "val_size": 100,
            "download": False,
        }
        scale = CIFAR_TRAIN_IMAGES / cifar_images
        note = (
            f"stand-in images in CIFAR format; {cifar_images} timed, scaled to {CIFAR_TRAIN_IMAGES}"
        )
    elif name == "wikitext2_gpt":
        root = scratch / "wikitext"
        if not root.exists():
            _stand_in_wikitext(root)
        args = {"data_root": str(root), "val_batches": 1}
        note = f"stand-in corpus with WikiText-2's vocabulary ({WIKITEXT2_VOCAB}); default steps"
    elif name == "shakespeare_char_gpt":
        args = {"val_batches": 1}
    report = next(
        iter(run_trial(name, "adam", {}, epochs=1, seed=0, workload_args=args, device=device))
    )
    m = report.metrics
    return {
        "epoch_seconds": round(m["epoch_seconds"] * scale, 2),
        "samples_per_second": round(m["samples_per_second"], 1),
        "measured_epoch_seconds": round(m["epoch_seconds"], 3),
        "note": note,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", default=None, help="workload names")
    parser.add_argument("--cifar-images", type=int, default=256)
    args = parser.parse_args(argv)
    names = args.only or list(WORKLOADS)
    report = {
        "benchmark": "workload_cost",
        "command": "python benchmarks/workload_cost.py " + " ".join(argv or sys.argv[1:]),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "workloads": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            report["workloads"][name] = measure(name, args.device, Path(scratch), args.cifar_images)
            r = report["workloads"][name]
            print(f"{name}: {r['epoch_seconds']:.1f} s per epoch ({r['note']})", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

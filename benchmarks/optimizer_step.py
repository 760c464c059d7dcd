"""Optimizer step time of KOALA++ against its peers, measured side by side in one run.

Peers: torch.optim Adam, AdamW and SGD with momentum (all foreach), KOALA++'s multi-tensor path
forced with ``foreach=True`` (the default on a GPU; on a CPU the default is the CPU path), and a
plain per-tensor Python loop of KOALA++ written the way the paper's reference code is (one
tensor at a time, a Python branch on each gradient norm, the dot products recomputed every
step). Parameter shapes are those of a ResNet-18 (torchvision, about 11.7 M parameters) and of a
small GPT.

Timings on shared machines drift, so the optimizers are stepped in turn (round robin) for
several repetitions and the median of each is compared with the others *from the same run*.
Prints one JSON document and a one-line summary per workload.

    python benchmarks/optimizer_step.py                 # CPU, float32
    python benchmarks/optimizer_step.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from koala_sweep.optim import KOALAPlusPlus

# The paper's recipe: sigma = Q = 0.2, eta = 2, wd = 5e-4 (CIFAR); online R.
KOALA_HP = dict(lr=2.0, sigma=0.2, q=0.2, weight_decay=5e-4)
GOALS = {"koalapp_vs_adam_max": 1.5, "koalapp_speedup_vs_per_tensor_loop_min": 2.0}


class PerTensorLoopKOALAPlusPlus(torch.optim.Optimizer):
    """KOALA++ as a straightforward per-tensor loop, in the style of the paper's reference
    implementation: the baseline KOALA++'s default path (the CPU path on a CPU, the
    multi-tensor path on a GPU) is measured against."""

    def __init__(self, params, lr, sigma, q, weight_decay, alpha_r=0.9):
        super().__init__(params, dict(lr=lr))
        self.sigma, self.q, self.wd, self.alpha_r, self.r = sigma, q, weight_decay, alpha_r, 1.0

    @torch.no_grad()
    def step(self, loss, loss_var):
        self.r = self.alpha_r * self.r + (1 - self.alpha_r) * loss_var
        q, r = self.q, self.r
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.grad.norm() < 1e-9:  # a host sync per tensor
                    continue
                st = self.state[p]
                h = p.grad.reshape(-1) + self.wd * p.reshape(-1)
                v_prev = st.get("v", self.sigma * h)
                h_prev = st.get("h", h)
                x, y = torch.dot(h_prev, h_prev), torch.dot(h_prev, v_prev)
                s_prev = st.get("s", y + q * x + r)
                a, b = torch.dot(h, h_prev), torch.dot(h, v_prev)
                lam = (b + q * a) / s_prev
                w = b / x - a * y / x**2
                v = (a / x - lam) * v_prev + q * (h - lam * h_prev) + w * h_prev
                s = torch.dot(v + q * h, h) + r
                layer_loss = loss + 0.5 * self.wd * torch.dot(p.reshape(-1), p.reshape(-1))
                p.add_((-group["lr"] * layer_loss * (v + q * h) / s).view_as(p))
                st["v"], st["h"], st["s"] = v, h, s


def resnet18_shapes() -> list[tuple[int, ...]]:
    import torchvision

    return [tuple(p.shape) for p in torchvision.models.resnet18().parameters()]


def small_gpt_shapes(
    vocab: int = 65, context: int = 256, d: int = 384, layers: int = 6
) -> list[tuple[int, ...]]:
    """Parameter shapes of a small decoder-only transformer (character-level GPT)."""
    shapes: list[tuple[int, ...]] = [(vocab, d), (context, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,)]  # ln1, attention
        shapes += [(d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]  # ln2, MLP
    shapes += [(d,), (d,), (vocab, d)]  # final ln, head
    return shapes


def make_params(shapes, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.nn.Parameter((0.05 * torch.randn(s, generator=gen)).to(device, dtype))
        p.grad = (1e-2 * torch.randn(s, generator=gen)).to(device, dtype)
        params.append(p)
    return params


def state_bytes_per_parameter(opt: torch.optim.Optimizer, n_params: int) -> float:
    total = 0
    for st in opt.state.values():
        values = st.values() if isinstance(st, dict) else []
        for t in values:
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total / n_params


def build(name: str, params, device) -> tuple[torch.optim.Optimizer, Callable[[], None]]:
    loss = torch.tensor(1.3, device=device)
    var = torch.tensor(1.9, device=device)
    if name == "koalapp":
        opt = KOALAPlusPlus(params, **KOALA_HP)
        return opt, lambda: opt.step(loss=loss, loss_var=var)
    if name == "koalapp_multi_tensor":  # the GPU path, forced (on a GPU it is the default)
        opt = KOALAPlusPlus(params, **KOALA_HP, foreach=True)
        return opt, lambda: opt.step(loss=loss, loss_var=var)
    if name == "koalapp_no_wd":
        opt = KOALAPlusPlus(params, **{**KOALA_HP, "weight_decay": 0.0})
        return opt, lambda: opt.step(loss=loss, loss_var=var)
    if name == "koalapp_per_tensor_loop":
        opt = PerTensorLoopKOALAPlusPlus(params, **KOALA_HP)
        return opt, lambda: opt.step(loss=1.3, loss_var=1.9)
    if name == "adam":
        opt = torch.optim.Adam(params, lr=1e-3, foreach=True)
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=5e-4, foreach=True)
    elif name == "sgd_momentum":
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True)
    else:
        raise ValueError(name)
    return opt, opt.step


NAMES = [
    "adam",
    "adamw",
    "sgd_momentum",
    "koalapp",
    "koalapp_no_wd",
    "koalapp_multi_tensor",
    "koalapp_per_tensor_loop",
]


def measure(shapes, device, dtype, repeats: int, warmup: int = 2) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runs = {}
    for i, name in enumerate(NAMES):
        params = make_params(shapes, device, dtype, seed=i)
        opt, step = build(name, params, device)
        runs[name] = (params, opt, step)
    n_params = sum(p.numel() for p in runs["adam"][0])
    for _, _, step in runs.values():
        for _ in range(warmup):
            step()
    sync()
    times: dict[str, list[float]] = {name: [] for name in NAMES}
    for _ in range(repeats):
        for name in NAMES:  # round robin: drift hits every optimizer alike
            step = runs[name][2]
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    result = {
        "parameters": n_params,
        "tensors": len(shapes),
        "median_step_ms": {k: round(v * 1e3, 3) for k, v in median.items()},
        "ratio_to_adam": {k: round(v / median["adam"], 3) for k, v in median.items()},
        "state_bytes_per_parameter": {
            k: round(state_bytes_per_parameter(runs[k][1], n_params), 3) for k in NAMES
        },
    }
    result["koalapp_speedup_vs_per_tensor_loop"] = round(
        median["koalapp_per_tensor_loop"] / median["koalapp"], 3
    )
    result["goals_met"] = {
        "koalapp_vs_adam": result["ratio_to_adam"]["koalapp"] <= GOALS["koalapp_vs_adam_max"],
        "koalapp_vs_per_tensor_loop": result["koalapp_speedup_vs_per_tensor_loop"]
        >= GOALS["koalapp_speedup_vs_per_tensor_loop_min"],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument(
        "--quick", action="store_true", help="tiny shapes and few repeats (a smoke test)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.quick:
        workloads = {"tiny": [(32, 16), (16,), (8, 32)]}
        repeats = 3
    else:
        workloads = {"resnet18": resnet18_shapes(), "small_gpt": small_gpt_shapes()}
        repeats = args.repeats
    report = {
        "benchmark": "optimizer_step",
        "command": "python benchmarks/optimizer_step.py " + " ".join(argv or sys.argv[1:]),
        "device": str(device),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "repeats": repeats,
        "koalapp_hyperparameters": KOALA_HP,
        "goals": GOALS,
        "workloads": {},
    }
    for name, shapes in workloads.items():
        report["workloads"][name] = measure(shapes, device, dtype, repeats)
    print(json.dumps(report, indent=2))
    for name, res in report["workloads"].items():
        r = res["ratio_to_adam"]
        print(
            f"{name}: KOALA++ step {r['koalapp']:.2f}x Adam (no wd {r['koalapp_no_wd']:.2f}x, "
            f"multi-tensor path {r['koalapp_multi_tensor']:.2f}x), "
            f"AdamW {r['adamw']:.2f}x, SGD {r['sgd_momentum']:.2f}x; "
            f"{res['koalapp_speedup_vs_per_tensor_loop']:.1f}x faster than the per-tensor loop; "
            f"state {res['state_bytes_per_parameter']['koalapp']:.2f} B/param "
            f"(Adam {res['state_bytes_per_parameter']['adam']:.2f})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures and helpers of the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "koalapp_reference.pt"


@pytest.fixture(scope="session")
def golden_scenarios() -> list[dict]:
    # weights_only=True: the file is data, never code.
    return torch.load(GOLDEN, weights_only=True)


def tiny_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(
        dtype
    )


def classification_batch(step: int, n: int = 16, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n, 6, generator=g).to(dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def train_steps(
    model, opt, steps, *, start: int = 0, scheduler=None, dtype=torch.float32, fixed_batch=False
):
    """Plain KOALA training: per-sample cross-entropy, L = mean, V = mean of squares."""
    losses = []
    for k in range(start, start + steps):
        x, y = classification_batch(0 if fixed_batch else k, dtype=dtype)
        per_sample = torch.nn.functional.cross_entropy(model(x).float(), y, reduction="none")
        loss = per_sample.mean()
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss, loss_var=(per_sample.detach() ** 2).mean())
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses

"""Terminal output shared by commands: errors on stderr, per-epoch rows as they arrive."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console

# Output piped to a file or a test gets a readable width instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() else 120
stdout = Console(highlight=False, soft_wrap=True, width=_WIDTH)
stderr = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)


def error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {message}", markup=True)


def _fmt(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


class EpochPrinter:
    """Prints one line per epoch (aligned columns, header first) or one JSON object per line."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.columns: list[str] | None = None

    def row(self, epoch: int, metrics: dict[str, float], diverged: bool, reason: str | None):
        if self.as_json:
            record: dict[str, Any] = {"epoch": epoch, **metrics, "diverged": diverged}
            if reason:
                record["reason"] = reason
            # JSON has no inf/nan: write them as strings so every line stays valid JSON.
            clean = {
                k: (v if not (isinstance(v, float) and not math.isfinite(v)) else str(v))
                for k, v in record.items()
            }
            print(json.dumps(clean), flush=True)
            return
        if self.columns is None:
            self.columns = ["epoch", *metrics]
            stdout.print("  ".join(f"{c:>14}" for c in self.columns))
        values = [str(epoch), *(_fmt(metrics.get(c, float("nan"))) for c in self.columns[1:])]
        stdout.print("  ".join(f"{v:>14}" for v in values))
        if diverged:
            stdout.print(f"diverged at epoch {epoch}: {reason}")

"""`koala-sweep launch` as the benchmarks run it: the command a user types, from this
interpreter's environment, in a fresh process (the command itself keeps a local Ray on the
loopback and Tune's console output off)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def launch(study: Path | str, cwd: Path | str, storage: str | None = None):
    """Run the launch to its end; returns the finished process (its output captured)."""
    command = [str(Path(sys.executable).parent / "koala-sweep"), "launch", str(study)]
    if storage is not None:
        command += ["--storage", storage]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def failed(out: subprocess.CompletedProcess, what: str) -> RuntimeError:
    """The error a benchmark raises when its launch did not succeed: the command's output tail."""
    return RuntimeError(f"{what} failed (exit {out.returncode}):\n{out.stdout[-2000:]}{out.stderr}")

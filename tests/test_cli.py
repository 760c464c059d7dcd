"""The installed console script answers --version, --help and info."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import koala_sweep


def _run(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("koala-sweep", path=str(Path(sys.executable).parent))
    assert exe, "the koala-sweep console script is not installed in this environment"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_version():
    out = _run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"koala-sweep {koala_sweep.__version__}"


def test_help_lists_the_commands():
    out = _run("--help")
    assert out.returncode == 0
    assert "KOALA++" in out.stdout and "info" in out.stdout


def test_info_reports_versions_and_device():
    out = _run("info")
    assert out.returncode == 0
    assert "torch: 2.14.1" in out.stdout and "device: " in out.stdout


def test_unknown_command_fails():
    out = _run("no-such-command")
    assert out.returncode == 2

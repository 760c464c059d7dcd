"""The benchmark scripts run and report what they claim to report (tiny shapes, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_optimizer_step_benchmark_quick():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "optimizer_step.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    tiny = report["workloads"]["tiny"]
    for name in ("adam", "adamw", "sgd_momentum", "koalapp", "koalapp_per_tensor_loop"):
        assert tiny["median_step_ms"][name] > 0
    assert tiny["ratio_to_adam"]["adam"] == 1.0
    state = tiny["state_bytes_per_parameter"]
    # Both: two buffers per parameter plus a few scalars per tensor (Adam's step counter).
    assert 8.0 <= state["adam"] <= 8.0 * 1.1
    assert 8.0 <= state["koalapp"] <= 8.0 * 1.1
    assert "KOALA++ step" in out.stderr  # the one-line summary


def test_workload_cost_benchmark_on_the_default_workload():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "workload_cost.py"),
            "--only",
            "fashion_mnist_cnn",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    cost = report["workloads"]["fashion_mnist_cnn"]
    assert cost["epoch_seconds"] > 0 and cost["note"].startswith("real data")


def test_store_benchmark_small(postgres_url):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "store.py"),
            "--trials",
            "60",
            "--epochs",
            "5",
            "--postgres",
            postgres_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for backend in ("sqlite", "postgresql"):
        r = report["backends"][backend]
        assert r["metric_rows_written"] == 2 * 60 * 5
        assert r["frame_rows"] == [60, 300]
        assert r["read_goal_met"] is True

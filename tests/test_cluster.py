"""Launching into an existing Ray cluster with --address: a real two-node cluster on
127.0.0.1 (`ray start --head` plus a second node), torn down by the pids the test started."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import _free_port

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "tests" / "studies" / "cluster.yaml"
BIN = Path(sys.executable).parent


def _cluster_pids(markers: list[str]) -> set[int]:
    """Processes whose command line names this cluster, and all their descendants (the agents
    a raylet starts rename themselves and carry no marker)."""
    parent: dict[int, int] = {}
    roots: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            parent[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if any(m in cmdline for m in markers):
            roots.add(pid)
    found = set(roots)
    changed = True
    while changed:
        children = {p for p, pp in parent.items() if pp in found and p not in found}
        found |= children
        changed = bool(children)
    return found


def _stop_cluster(markers: list[str]) -> None:
    pids = _cluster_pids(markers)
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while (
            wait and time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids)
        ):
            time.sleep(0.2)


@pytest.mark.slow
def test_launch_into_a_two_node_cluster(tmp_path):
    # A short temp dir: Ray's unix sockets live there and their paths have a length limit.
    temp = tempfile.mkdtemp(prefix="kscl-", dir="/tmp")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Token authentication stays on, stated explicitly so that every node and the driver use
    # the machine's token (~/.ray/auth_token). Multi-node clusters need Ray's cluster mode, so
    # the nodes run without the loopback-only switch the local tests use.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["RAY_AUTH_MODE"] = "token"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                f"--port={port}",
                f"--temp-dir={temp}",
                "--include-dashboard=false",
                *common,
            ],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        subprocess.run(
            [str(BIN / "ray"), "start", f"--address={address}", *common],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        db = tmp_path / "store.db"
        out = subprocess.run(
            [
                str(BIN / "koala-sweep"),
                "launch",
                str(STUDY),
                "--storage",
                f"sqlite:///{db}",
                "--address",
                address,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
            env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        with sqlite3.connect(db) as conn:
            states = [r[0] for r in conn.execute("SELECT state FROM koala_trial")]
        assert states == ["COMPLETE", "COMPLETE"]
        status = subprocess.run(
            [str(BIN / "ray"), "status", f"--address={address}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert status.stdout.count("node_") >= 2 or "2 node" in status.stdout, status.stdout
    finally:
        # End only what this test started: the processes of this cluster (its temp dir or its
        # GCS port on their command line) and their children.
        _stop_cluster([temp, f":{port}"])

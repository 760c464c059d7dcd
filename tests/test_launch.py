"""koala-sweep launch end to end through Ray: the store and Optuna agree, pruned trials are
PRUNED with the epochs they reached, and an interrupted launch resumes to exactly its budget."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from rich.console import Console

from koala_sweep.spec import load_spec
from koala_sweep.store import open_store

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
RESUME = ROOT / "tests" / "studies" / "resume.yaml"

OPTUNA_STATE = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "DIVERGED": "FAIL", "FAILED": "FAIL"}


def _launch(path, url):
    from koala_sweep.tune.launcher import launch

    out = io.StringIO()
    launch(str(path), storage=url, console=Console(file=out, width=120), live=False)
    return out.getvalue()


def check_store_and_optuna_agree(url: str, spec_path: Path) -> dict[str, int]:
    spec, _ = load_spec(spec_path)
    store = open_store(url, create=False)
    trials = store.trials(spec.name)
    metrics = store.metrics(spec.name)
    counts: dict[str, int] = {}
    for arm_name, arm in spec.arms.items():
        ours = trials[(trials.arm == arm_name) & (trials.state != "RUNNING")]
        ours = ours[~ours.error.fillna("").str.startswith("interrupted")]
        study = optuna.load_study(study_name=f"{spec.name}/{arm_name}", storage=url)
        interrupted = set(study.user_attrs.get("interrupted_trials", []))
        theirs = {t.number: t for t in study.trials if t.number not in interrupted}
        assert len(theirs) == arm.budget
        assert ours.optuna_trial_number.nunique() == arm.budget == len(ours) // len(spec.seeds)
        for _, row in ours.iterrows():
            t = theirs[int(row.optuna_trial_number)]
            assert t.state.name == OPTUNA_STATE[row.state], (row.state, t.state)
            epochs = metrics[metrics.trial == row.trial]["epoch"].tolist()
            assert epochs == list(range(1, int(row.epochs) + 1))
            if row.state in ("COMPLETE", "PRUNED"):
                assert len(t.intermediate_values) == row.epochs
            if row.state == "COMPLETE":
                assert row.epochs == spec.epochs
                # Optuna's value is the mean over the configuration's seeds.
                same = ours[ours.optuna_trial_number == row.optuna_trial_number]
                assert t.value == pytest.approx(same.value.mean(), rel=1e-6)
            if row.state == "PRUNED":
                assert row.epochs < spec.epochs or t.intermediate_values
            if row.state == "DIVERGED":
                assert t.user_attrs.get("diverged") is True and row.error
        for state in ("COMPLETE", "PRUNED", "DIVERGED", "FAILED"):
            counts[state] = counts.get(state, 0) + int((ours.state == state).sum())
    store.dispose()
    return counts


@pytest.mark.slow
def test_smoke_study_end_to_end(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/store.db"
    out = _launch(SMOKE, url)
    assert "study smoke" in out
    counts = check_store_and_optuna_agree(url, SMOKE)
    assert counts["PRUNED"] >= 1  # the Optuna pruner really stopped trials
    assert counts["COMPLETE"] >= 1
    # Trials reuse their workers (PyTorch imported, data loaded once per worker): an arm's
    # trials ran in no more processes than it runs at once.
    for arm, trials in (("koalapp", 5), ("adam", 4)):
        pids = {
            json.loads(line)["pid"]
            for path in (tmp_path / "runs" / "ray" / f"smoke-{arm}").glob("*/result.json")
            for line in path.read_text().splitlines()
            if line.strip()
        }
        assert 1 <= len(pids) <= 2 < trials, (arm, pids)
    # Launching a finished study again runs nothing and changes nothing.
    before = open_store(url, create=False).trials("smoke")
    _launch(SMOKE, url)
    after = open_store(url, create=False).trials("smoke")
    assert len(after) == len(before)


def _launch_process(url: str, cwd: Path, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "koala-sweep"
    return subprocess.Popen(
        [str(exe), "launch", str(RESUME), "--storage", url],
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )


def _states(db: Path) -> list[str]:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return [r[0] for r in conn.execute("SELECT state FROM koala_trial")]
    except sqlite3.OperationalError:
        return []


@pytest.mark.slow
def test_killed_launch_resumes_to_exactly_its_budget(tmp_path):
    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    first = _launch_process(url, tmp_path, tmp_path / "first.log")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = _states(db)
        if states.count("COMPLETE") >= 1 and "RUNNING" in states:
            break
        time.sleep(0.5)
    else:
        first.kill()
        pytest.fail(
            "the first launch never had a finished and a running trial: "
            + (tmp_path / "first.log").read_text()[-2000:]
        )
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    with sqlite3.connect(db) as conn:
        kept = {r[0] for r in conn.execute("SELECT id FROM koala_trial WHERE state='COMPLETE'")}
        assert conn.execute("SELECT count(*) FROM koala_trial WHERE state='RUNNING'").fetchone()[0]

    second = _launch_process(url, tmp_path, tmp_path / "second.log")
    assert second.wait(300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert "interrupted trial(s) marked FAILED" in (tmp_path / "second.log").read_text()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, state, error FROM koala_trial").fetchall()
    assert "RUNNING" not in {r[1] for r in rows}
    assert kept <= {r[0] for r in rows if r[1] == "COMPLETE"}  # finished trials kept, once
    interrupted = [r for r in rows if r[1] == "FAILED" and r[2].startswith("interrupted")]
    assert interrupted
    counts = check_store_and_optuna_agree(url, RESUME)
    assert sum(counts.values()) == 5  # exactly the budget, not counting the interrupted one


@pytest.mark.slow
def test_grid_study_runs_every_point_once_per_seed(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/store.db"
    grid = ROOT / "tests" / "studies" / "grid.yaml"
    _launch(grid, url)
    trials = open_store(url, create=False).trials("grid_test")
    assert len(trials) == 4 * 2  # every grid point, once per seed
    points = {(row.q, row.variant) for _, row in trials.iterrows()}
    assert points == {(0.01, "vanilla"), (0.01, "symmetric"), (0.1, "vanilla"), (0.1, "symmetric")}
    assert set(trials.groupby(["q", "variant"])["seed"].apply(frozenset)) == {frozenset({0, 1})}
    check_store_and_optuna_agree(url, grid)


@pytest.mark.slow
def test_trials_that_raise_are_failed_with_their_traceback(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/store.db"
    failing = ROOT / "tests" / "studies" / "failing.yaml"
    _launch(failing, url)  # the study goes on and ends normally
    trials = open_store(url, create=False).trials("failing_test")
    assert set(trials.state) == {"FAILED"}
    final = trials[~trials.error.str.startswith("retried")]
    assert len(final) == 2  # the budget: two configurations
    assert all("Fashion-MNIST not found" in e and "Traceback" in e for e in final.error)
    assert len(trials[trials.error.str.startswith("retried")]) == 2  # retries: 1, each
    study = optuna.load_study(study_name="failing_test/adam", storage=url)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]

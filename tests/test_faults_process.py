"""Nothing lost when processes die or the database goes away: real launches (Ray, Optuna,
SQLite or PostgreSQL) killed, starved of memory, diverging, or cut off from their database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from koala_sweep.store import open_store

from .conftest import PostgresServer, _admin, require_postgres_binaries
from .test_launch import RESUME, _launch, check_store_and_optuna_agree

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "tests" / "studies"
EXE = str(Path(sys.executable).parent / "koala-sweep")


def _launch_process(study: Path, url: str, cwd: Path, log: Path, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [EXE, "launch", str(study), "--storage", url],
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **env},
    )


def _rows(url: str, sql: str) -> list[tuple]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
        return []  # not created yet, or the server is down
    finally:
        engine.dispose()


def _wait_until(condition, timeout: float, proc: subprocess.Popen, log: Path, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"the launch ended before {what}: " + log.read_text()[-3000:])
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"never saw {what}: " + log.read_text()[-3000:])


def _finished_and_running(url: str) -> bool:
    states = [r[0] for r in _rows(url, "SELECT state FROM koala_trial")]
    return states.count("COMPLETE") >= 1 and "RUNNING" in states


@pytest.mark.slow
def test_killed_launch_resumes_to_exactly_its_budget_on_postgresql(postgres_url, tmp_path):
    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    first = _launch_process(RESUME, postgres_url, tmp_path, log1)
    _wait_until(
        lambda: _finished_and_running(postgres_url),
        240,
        first,
        log1,
        "a finished and a running trial",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    kept = {r[0] for r in _rows(postgres_url, "SELECT id FROM koala_trial WHERE state='COMPLETE'")}
    second = _launch_process(RESUME, postgres_url, tmp_path, log2)
    assert second.wait(300) == 0, log2.read_text()[-3000:]
    rows = _rows(postgres_url, "SELECT id, state, error FROM koala_trial")
    assert "RUNNING" not in {r[1] for r in rows}
    assert kept <= {r[0] for r in rows if r[1] == "COMPLETE"}  # finished trials kept, once
    assert any(r[1] == "FAILED" and r[2].startswith("interrupted") for r in rows)
    counts = check_store_and_optuna_agree(postgres_url, RESUME)
    assert sum(counts.values()) == 5  # exactly the budget


@pytest.mark.slow
def test_postgresql_restarted_during_a_study(tmp_path):
    require_postgres_binaries()
    server = PostgresServer()
    try:
        _admin(server.url, 'CREATE DATABASE "restart"')
        url = f"{server.url}/restart"
        log = tmp_path / "launch.log"
        launch = _launch_process(RESUME, url, tmp_path, log, KOALA_SWEEP_STORE_RETRY_SECONDS="120")
        _wait_until(
            lambda: _finished_and_running(url), 240, launch, log, "a finished and a running trial"
        )
        server.stop()  # the database goes away while a trial trains and reports
        time.sleep(8)
        server.start()
        assert launch.wait(300) == 0, log.read_text()[-3000:]
        assert "store unreachable" in log.read_text()  # it waited and retried
        counts = check_store_and_optuna_agree(url, RESUME)
        assert sum(counts.values()) == 5 and counts.get("FAILED", 0) == 0  # nothing lost
    finally:
        server.remove()


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may hold spaces: ppid follows the ")".
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _ray_trial_workers(root: int) -> list[int]:
    """The Ray trial workers started by the launch ``root`` (its descendants): never another
    study's workers that happen to run on the same machine."""
    parents = _parents()

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False

    pids = []
    for pid in parents:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::ResourceTrainable") and descends(pid):
            pids.append(pid)
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("retries", [1, 0])
def test_a_killed_trial_worker_is_retried_or_failed_as_configured(retries, tmp_path):
    study = tmp_path / "worker_kill.yaml"
    study.write_text(
        (STUDIES / "worker_kill.yaml").read_text().replace("retries: 1", f"retries: {retries}")
    )
    url = f"sqlite:///{tmp_path}/store.db"
    log = tmp_path / "launch.log"
    launch = _launch_process(study, url, tmp_path, log)

    def mid_trial() -> bool:
        epochs = _rows(
            url,
            "SELECT count(*) FROM koala_epoch e JOIN koala_trial t ON "
            "t.id = e.trial_id WHERE t.state = 'RUNNING'",
        )
        return bool(epochs and epochs[0][0] >= 1 and _ray_trial_workers(launch.pid))

    _wait_until(mid_trial, 240, launch, log, "a trial in the middle of its epochs")
    killed = _ray_trial_workers(launch.pid)
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert launch.wait(300) == 0, log.read_text()[-3000:]  # the study completes
    rows = _rows(url, "SELECT state, error, optuna_trial_number FROM koala_trial")
    assert "RUNNING" not in {r[0] for r in rows}
    study_ = optuna.load_study(study_name="worker_kill_test/adam", storage=url)
    assert len(study_.trials) == 3  # the budget, each configuration told once
    if retries:
        retried = [r for r in rows if r[0] == "FAILED" and r[1].startswith("retried")]
        assert len(retried) == 1
        final = [r for r in rows if r not in retried]
        assert [r[0] for r in final] == ["COMPLETE"] * 3  # the killed one ran again, to the end
        assert {t.state.name for t in study_.trials} == {"COMPLETE"}
    else:
        failed = [r for r in rows if r[0] == "FAILED"]
        assert len(failed) == 1 and "worker process died" in failed[0][1]  # the reason
        assert sorted(r[0] for r in rows) == ["COMPLETE", "COMPLETE", "FAILED"]
        assert sorted(t.state.name for t in study_.trials) == ["COMPLETE", "COMPLETE", "FAIL"]


@pytest.mark.slow
def test_out_of_memory_and_divergence_are_results_not_crashes(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/store.db"
    _launch(STUDIES / "oom.yaml", url)
    oom = open_store(url, create=False).trials("oom_test")
    assert list(oom.state) == ["FAILED", "FAILED"]  # the study went on after the first
    assert all(
        e.startswith("out of memory: the trial needed more than its limit of 0.02 GiB")
        for e in oom.error
    )
    told = optuna.load_study(study_name="oom_test/adam", storage=url).trials
    assert [t.state.name for t in told] == ["FAIL", "FAIL"]

    _launch(STUDIES / "diverging.yaml", url)
    trials = open_store(url, create=False).trials("diverging_test")
    koala = trials[trials.arm == "koalapp"]
    assert set(koala.state) == {"DIVERGED"} and len(koala) == 2 * 2  # 2 configurations x 2 seeds
    assert all(e and ("nan" in e or "exceeds" in e) for e in koala.error)  # the reason
    assert set(trials[trials.arm == "adam"].state) == {"COMPLETE"}
    for t in optuna.load_study(study_name="diverging_test/koalapp", storage=url).trials:
        assert t.state.name == "FAIL" and t.user_attrs.get("diverged") is True

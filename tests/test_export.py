"""koala-sweep export and db upgrade, as a user runs them, on both backends."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from koala_sweep.store import open_store

from .test_cli import _run
from .test_store import fill

TRIAL_COLUMNS = ["study", "arm", "optimizer", "trial", "state", "seed", "epochs", "value"]


def _read(path, fmt):
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "parquet":
        return pd.read_parquet(path)
    return pd.DataFrame(json.loads(path.read_text()))


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_every_format(store_url, tmp_path, fmt):
    store = open_store(store_url)
    fill(store, trials=2, epochs=3)
    store.dispose()
    path = tmp_path / f"trials.{fmt}"
    out = _run("export", "demo", "--format", fmt, "-o", str(path), "--storage", store_url)
    assert out.returncode == 0, out.stderr
    trials = _read(path, fmt)
    assert list(trials.columns[:8]) == TRIAL_COLUMNS
    assert {"q", "variant", "lr"} <= set(trials.columns)
    assert len(trials) == 4

    path = tmp_path / f"metrics.{fmt}"
    out = _run(
        "export", "demo", "--metrics", "--format", fmt, "-o", str(path), "--storage", store_url
    )
    assert out.returncode == 0, out.stderr
    per_epoch = _read(path, fmt)
    assert len(per_epoch) == 4 * 3
    assert {"trial", "epoch", "train_loss", "val_loss", "val_accuracy", "state", "q"} <= set(
        per_epoch.columns
    )


def test_export_unknown_study_and_bad_format(store_url, tmp_path):
    store = open_store(store_url)
    fill(store, study="alpha", trials=1)
    store.dispose()
    out = _run("export", "beta", "-o", str(tmp_path / "x.csv"), "--storage", store_url)
    assert out.returncode == 2 and "no study named 'beta'" in out.stderr and "alpha" in out.stderr
    out = _run(
        "export", "alpha", "--format", "xlsx", "-o", str(tmp_path / "x"), "--storage", store_url
    )
    assert out.returncode == 2 and "--format" in out.stderr
    assert not (tmp_path / "x.csv").exists()


def test_db_upgrade_creates_then_reports_current(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/new.db"
    first = _run("db", "upgrade", "--storage", url)
    assert first.returncode == 0 and "none -> " in first.stdout
    again = _run("db", "upgrade", "--storage", url)
    assert again.returncode == 0 and "is current" in again.stdout


def test_password_is_masked_in_command_errors():
    out = _run("db", "upgrade", "--storage", "postgresql+psycopg://bob:pa55word@127.0.0.1:1/x")
    assert out.returncode == 2
    assert "pa55word" not in out.stdout + out.stderr and "bob:***@" in out.stderr


def test_status_lists_studies_and_summarises_arms(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    store = open_store(url)
    fill(store, study="alpha", trials=2, epochs=2)
    store.dispose()
    listing = _run("status", "--storage", url)
    assert listing.returncode == 0 and "alpha: fashion_mnist_cnn, 4 trials" in listing.stdout
    out = _run("status", "alpha", "--storage", url)
    assert out.returncode == 0, out.stderr
    assert "koalapp" in out.stdout and "adam" in out.stdout
    assert "best koalapp: q=0.01, variant=symmetric" in out.stdout  # the lowest value wins
    missing = _run("status", "beta", "--storage", url)
    assert missing.returncode == 2 and "alpha" in missing.stderr

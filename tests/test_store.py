"""The store, against real SQLite and real PostgreSQL: schema, writes, tidy frames, Optuna's
storage in the same database, migrations, masking of passwords."""

from __future__ import annotations

import math

import optuna
import pytest
import sqlalchemy as sa

from koala_sweep.store import (
    METRIC_COLUMNS,
    SchemaError,
    StoreConflict,
    StoreError,
    UnknownStudy,
    current_revision,
    epoch_row,
    head_revision,
    mask_url,
    open_store,
    resolve_url,
)
from koala_sweep.store.engine import make_engine
from koala_sweep.store.schema import VERSION_TABLE, upgrade

SPEC = "name: demo\nworkload: fashion_mnist_cnn\n"


def fill(store, study="demo", trials=3, epochs=4, spec=SPEC):
    w = store.writer
    sid = w.create_study(
        study,
        spec,
        workload="fashion_mnist_cnn",
        metric="val_loss",
        direction="minimize",
        package_versions={"torch": "2.14.1"},
        device="cpu",
    )
    arms = {
        "koalapp": w.add_arm(
            sid,
            "koalapp",
            optimizer="koalapp",
            search_space={"q": {"log_uniform": [0.001, 1.0]}},
            budget=trials,
            optuna_study_name=f"{study}/koalapp",
        ),
        "adam": w.add_arm(
            sid,
            "adam",
            optimizer="adam",
            search_space={"lr": {"log_uniform": [1e-4, 0.03]}},
            budget=trials,
            optuna_study_name=f"{study}/adam",
        ),
    }
    ids = []
    for arm, aid in arms.items():
        for n in range(trials):
            params = (
                {"q": 0.01 * (n + 1), "variant": "symmetric"}
                if arm == "koalapp"
                else {"lr": 1e-3 * (n + 1)}
            )
            tid = w.start_trial(aid, params, seed=n, optuna_trial_number=n)
            w.record_epochs(
                epoch_row(
                    tid, e, {"train_loss": 1.0 / e, "val_loss": 0.5 / e, "val_accuracy": 0.1 * e}
                )
                for e in range(1, epochs + 1)
            )
            w.finish_trial(tid, "COMPLETE", value=0.5 / epochs, epochs=epochs)
            ids.append(tid)
    return sid, ids


def test_round_trip_gives_tidy_frames(store_url):
    store = open_store(store_url)
    fill(store)
    trials = store.trials("demo")
    assert list(trials.columns[:8]) == [
        "study",
        "arm",
        "optimizer",
        "trial",
        "state",
        "seed",
        "epochs",
        "value",
    ]
    assert len(trials) == 6 and set(trials["state"]) == {"COMPLETE"}
    assert {"q", "variant", "lr"} <= set(trials.columns)  # one column per hyperparameter
    assert trials.loc[trials.arm == "adam", "q"].isna().all()
    metrics = store.metrics("demo")
    assert len(metrics) == 6 * 4
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(metrics.columns)
    assert "val_perplexity" not in metrics.columns  # columns with no value are dropped
    assert metrics.groupby("trial")["epoch"].apply(list).map(lambda e: e == [1, 2, 3, 4]).all()
    studies = store.studies()
    assert studies.loc[0, "study"] == "demo" and studies.loc[0, "trials"] == 6


def test_metrics_of_some_trials_and_the_progress_fingerprint(store_url):
    from koala_sweep.store.reader import arms_frame, metrics_frame, study_version

    store = open_store(store_url)
    _, ids = fill(store)
    some = metrics_frame(store.engine, "demo", ids[1:3])  # an IN list of bound parameters
    assert sorted(set(some["trial"])) == ids[1:3] and len(some) == 2 * 4
    arms = arms_frame(store.engine, "demo")
    assert list(arms["arm"]) == ["koalapp", "adam"] and arms["search_space"].map(dict).all()
    before = study_version(store.engine, "demo")
    aid = int(store.engine.connect().exec_driver_sql("SELECT min(id) FROM koala_arm").scalar())
    tid = store.writer.start_trial(aid, {"lr": 0.1}, seed=9, optuna_trial_number=9)
    started = study_version(store.engine, "demo")
    store.writer.record_epochs([epoch_row(tid, 1, {"val_loss": 1.0})])
    reported = study_version(store.engine, "demo")
    assert len({before, started, reported}) == 3  # each kind of progress changes it
    assert study_version(store.engine, "demo") == reported  # and nothing else does


def test_metrics_read_in_chunks_equal_one_read(store_url, monkeypatch):
    """Large reads arrive in chunks of rows: chunk edges inside a trial, a last partial chunk
    and an empty study change nothing in the frame."""
    import pandas as pd

    from koala_sweep.store import reader

    store = open_store(store_url)
    fill(store, trials=4, epochs=5)  # 40 rows
    whole = store.metrics("demo")
    monkeypatch.setattr(reader, "FETCH_CHUNK_ROWS", 7)
    pd.testing.assert_frame_equal(store.metrics("demo"), whole)
    fill(store, study="empty", trials=0)
    assert store.metrics("empty").empty


def test_non_finite_and_unknown_metrics_survive(store_url):
    store = open_store(store_url)
    _, ids = fill(store, trials=1, epochs=1)
    store.writer.record_epochs(
        [
            epoch_row(
                ids[0], 2, {"train_loss": float("nan"), "val_loss": float("inf"), "my_metric": 3.5}
            )
        ]
    )
    m = store.metrics("demo").set_index(["trial", "epoch"])
    assert math.isnan(m.loc[(ids[0], 2), "train_loss"])
    assert m.loc[(ids[0], 2), "val_loss"] == math.inf
    assert m.loc[(ids[0], 2), "my_metric"] == 3.5


def test_trial_states_and_errors(store_url):
    store = open_store(store_url)
    sid, _ = fill(store, trials=1)
    w = store.writer
    aid = w.add_arm(
        sid,
        "koalapp",
        optimizer="koalapp",
        search_space={},
        budget=1,
        optuna_study_name="demo/koalapp",
    )
    running = w.start_trial(aid, {"q": 5.0}, seed=0)
    failed = w.start_trial(aid, {"q": 6.0}, seed=0)
    w.finish_trial(failed, "FAILED", value=None, epochs=0, error="RuntimeError: boom")
    t = store.trials("demo").set_index("trial")
    assert t.loc[running, "state"] == "RUNNING"
    assert t.loc[failed, "state"] == "FAILED" and t.loc[failed, "error"] == "RuntimeError: boom"
    with pytest.raises(ValueError, match="state"):
        w.finish_trial(running, "DONE", value=1.0, epochs=1)
    with pytest.raises(sa.exc.IntegrityError):  # the database itself refuses bad states
        with store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE koala_trial SET state = 'WEIRD' WHERE id = :id"), {"id": running}
            )


def test_same_study_file_resumes_a_different_one_is_refused(store_url):
    store = open_store(store_url)
    sid, _ = fill(store, trials=1)
    assert (
        store.writer.create_study(
            "demo",
            SPEC,
            workload="w",
            metric="m",
            direction="minimize",
            package_versions={},
            device="cpu",
        )
        == sid
    )
    with pytest.raises(StoreConflict, match="different study file"):
        store.writer.create_study(
            "demo",
            SPEC + "epochs: 9\n",
            workload="w",
            metric="m",
            direction="minimize",
            package_versions={},
            device="cpu",
        )


def test_unknown_study_lists_the_studies(store_url):
    store = open_store(store_url)
    fill(store, study="alpha", trials=1)
    fill(store, study="beta", trials=1)
    with pytest.raises(UnknownStudy, match="alpha, beta"):
        store.trials("gamma")


def test_optuna_opens_the_arms_in_the_same_database(store_url):
    store = open_store(store_url)
    fill(store, trials=1)
    study = optuna.create_study(
        study_name="demo/koalapp", storage=store.optuna_storage(), direction="minimize"
    )
    study.optimize(lambda t: t.suggest_float("q", 1e-3, 1.0, log=True), n_trials=3)
    loaded = optuna.load_study(study_name="demo/koalapp", storage=store_url)
    assert len(loaded.trials) == 3
    # Both schemas coexist: ours and Optuna's, each with its own version table.
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {
        "koala_study",
        "koala_trial",
        VERSION_TABLE,
        "studies",
        "trials",
        "alembic_version",
    } <= tables
    assert len(store.trials("demo")) == 2  # untouched by Optuna's writes


def test_older_schema_is_upgraded_in_place(store_url):
    engine = make_engine(store_url)
    upgrade(engine, mask_url(store_url), revision="0001")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO koala_study (name, spec_yaml, spec_hash, workload, metric, direction, "
                "created_at, package_versions, device) VALUES ('old', 'name: old', 'x', 'w', "
                "'val_loss', 'minimize', '2026-01-01 00:00:00', '{}', 'cpu')"
            )
        )
    engine.dispose()
    with pytest.raises(SchemaError, match="db upgrade"):
        open_store(store_url, create=False)  # a reader does not upgrade behind one's back
    store = open_store(store_url)  # a writer upgrades
    assert current_revision(store.engine) == head_revision()
    assert store.studies()["study"].tolist() == ["old"]
    assert "ray_dashboard_url" in store.studies().columns


def test_newer_schema_is_refused(store_url):
    store = open_store(store_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    store.dispose()
    for create in (True, False):
        with pytest.raises(SchemaError, match="newer koala-sweep"):
            open_store(store_url, create=create)


def test_metric_columns_cover_every_metric_the_workloads_report():
    from koala_sweep.workloads import WORKLOADS

    declared = {m.name for w in WORKLOADS.values() for m in w.all_metrics()}
    assert declared == set(METRIC_COLUMNS)


def test_storage_url_resolution(monkeypatch):
    monkeypatch.delenv("KOALA_SWEEP_STORAGE", raising=False)
    assert resolve_url(None) == "sqlite:///runs/koala_sweep.db"
    monkeypatch.setenv("KOALA_SWEEP_STORAGE", "sqlite:////tmp/x.db")
    assert resolve_url(None) == "sqlite:////tmp/x.db"
    assert resolve_url("sqlite:///y.db") == "sqlite:///y.db"


def test_passwords_never_appear():
    url = "postgresql+psycopg://alice:s3cret-pw@127.0.0.1:1/koala"
    assert "s3cret-pw" not in mask_url(url) and "***" in mask_url(url)
    assert "s3cret-pw" not in mask_url("weird://bob:s3cret-pw@host")
    with pytest.raises(StoreError) as err:
        open_store(url)
    assert "s3cret-pw" not in str(err.value) and "alice:***@127.0.0.1" in str(err.value)


def test_an_open_store_never_shows_its_password(postgres_server):
    # The throwaway server trusts every client, so any password is accepted and must not show.
    url = postgres_server.replace("postgres@", "postgres:s3cret-pw@") + "/postgres"
    from koala_sweep.store import Store
    from koala_sweep.store.engine import make_engine

    store = Store(url, make_engine(url))
    assert "s3cret-pw" not in repr(store) and "s3cret-pw" not in repr(store.engine)
    assert "s3cret-pw" not in store.masked_url
    store.dispose()


def test_unsupported_database_is_named():
    from koala_sweep.store import StoreURLError

    with pytest.raises(StoreURLError, match="mysql"):
        open_store("mysql://u:pw@localhost/db")

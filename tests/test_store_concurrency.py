"""One writer process (as the launcher) and a reader process (as a report or the dashboard)
on the same store at the same time: no lost row, no "database is locked"."""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback

import pytest

from koala_sweep.store import epoch_row, open_store

TRIALS, EPOCHS = 150, 20  # 3,000 epoch rows, each epoch its own transaction


def _writer(url: str, ready, done) -> None:
    store = open_store(url)
    w = store.writer
    sid = w.create_study(
        "busy",
        "name: busy\n",
        workload="fashion_mnist_cnn",
        metric="val_loss",
        direction="minimize",
        package_versions={},
        device="cpu",
    )
    aid = w.add_arm(
        sid,
        "koalapp",
        optimizer="koalapp",
        search_space={},
        budget=TRIALS,
        optuna_study_name="busy/koalapp",
    )
    ready.set()
    for n in range(TRIALS):
        tid = w.start_trial(aid, {"q": 0.001 * (n + 1)}, seed=0, optuna_trial_number=n)
        for e in range(1, EPOCHS + 1):
            w.record_epochs([epoch_row(tid, e, {"train_loss": 1.0 / e, "val_loss": 1.0})])
        w.finish_trial(tid, "COMPLETE", value=1.0, epochs=EPOCHS)
    done.set()


def _reader(url: str, ready, done, out) -> None:
    try:
        ready.wait(60)
        store = open_store(url, create=False)
        seen, polls = [], 0
        while True:
            finished = done.is_set()
            seen.append(len(store.metrics("busy")) if polls % 2 else len(store.trials("busy")))
            polls += 1
            if finished:
                break
        out.put(("ok", polls, len(store.metrics("busy")), len(store.trials("busy"))))
    except Exception:  # noqa: BLE001 - the failure itself is the test's finding
        out.put(("error", traceback.format_exc(), 0, 0))


@pytest.mark.slow
def test_reader_polls_while_writer_writes(store_url):
    open_store(store_url).dispose()  # schema first, as the launcher does at start
    ctx = mp.get_context("spawn")
    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(store_url, ready, done))
    reader = ctx.Process(target=_reader, args=(store_url, ready, done, out))
    t0 = time.perf_counter()
    writer.start()
    reader.start()
    writer.join(300)
    reader.join(300)
    assert writer.exitcode == 0
    status, polls, metric_rows, trial_rows = out.get(timeout=10)
    assert status == "ok", polls  # polls holds the traceback on error
    assert polls > 10  # the reader really read while the writer wrote
    assert metric_rows == TRIALS * EPOCHS and trial_rows == TRIALS
    assert time.perf_counter() - t0 < 300


def _first_opener(url: str, barrier, out) -> None:
    try:
        barrier.wait(60)
        store = open_store(url)
        store.optuna_storage()
        out.put("ok")
    except Exception:  # noqa: BLE001 - the failure itself is the test's finding
        out.put(traceback.format_exc())


@pytest.mark.slow
def test_launches_opening_a_new_store_at_once(store_url):
    """Several launches started together on a database nobody has opened yet: they race to
    create the store's tables and Optuna's; every one of them must get a working store (the
    losers used to fail with "table ... already exists" or a duplicate version row)."""
    import optuna

    ctx = mp.get_context("spawn")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_first_opener, args=(store_url, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == ["ok"] * n, "\n".join(r for r in results if r != "ok")
    store = open_store(store_url, create=False)  # the schema is whole and current
    study = optuna.create_study(study_name="after", storage=store.optuna_storage())
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) == 2

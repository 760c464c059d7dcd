"""Which database errors the store's writes wait out, and for how long."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from koala_sweep.store import retry


class _Orig(Exception):
    pass


def _operational(text: str) -> OperationalError:
    return OperationalError("INSERT ...", {}, _Orig(text))


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    return slept


def test_disconnects_are_retried_until_the_write_goes_through(_no_sleep):
    calls = []

    def write(attempt):
        calls.append(attempt)
        if attempt < 2:
            raise _operational("connection refused: is the server running?")
        return "ok"

    disposed = []
    assert retry.call_with_retry(write, "testing", on_retry=lambda: disposed.append(1)) == "ok"
    assert calls == [0, 1, 2] and len(disposed) == 2
    assert _no_sleep == [0.5, 1.0]  # backing off


def test_errors_a_working_server_raises_are_not_retried():
    def duplicate(attempt):
        raise IntegrityError("INSERT ...", {}, _Orig("UNIQUE constraint failed"))

    with pytest.raises(IntegrityError):
        retry.call_with_retry(duplicate, "testing")
    # SQLite's lock wait already had its busy timeout; SQLite has no server to lose.
    assert not retry.is_disconnect(_operational("database is locked"))
    import sqlite3

    no_table = OperationalError("SELECT ...", {}, sqlite3.OperationalError("no such table: x"))
    assert not retry.is_disconnect(no_table)
    assert retry.is_disconnect(_operational("server closed the connection unexpectedly"))


def test_giving_up_after_the_window_names_what_was_being_written(monkeypatch):
    monkeypatch.setenv(retry.RETRY_ENV, "2")

    def down(attempt):
        raise _operational("connection refused")

    with pytest.raises(retry.StoreUnavailable, match="2 s while finishing a trial: connection"):
        retry.call_with_retry(down, "finishing a trial")

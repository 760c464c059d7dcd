"""Riding out a database that goes away for a while (a PostgreSQL restart, a failover, a
network blip): the launcher's writes wait and try again instead of losing a study's results.

Only errors that mean "the server could not be reached or dropped the connection" are retried;
a constraint violation or a bad statement fails at once. Every retried write is idempotent
(see ``StoreWriter``): a write whose commit reached the server before the connection dropped is
not applied twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)

# How long a write keeps trying before the launcher gives up (and says why).
DEFAULT_RETRY_SECONDS = 300.0
RETRY_ENV = "KOALA_SWEEP_STORE_RETRY_SECONDS"
_FIRST_WAIT, _MAX_WAIT = 0.5, 5.0


class StoreUnavailable(RuntimeError):
    """The store stayed unreachable for longer than the retry window."""


def retry_seconds() -> float:
    try:
        return float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_SECONDS))
    except ValueError:
        return DEFAULT_RETRY_SECONDS


def is_disconnect(err: BaseException) -> bool:
    """True for errors that a working server would not have raised: connection refused,
    server shutting down, connection dropped mid-statement."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DBAPIError) and err.connection_invalidated:
            return True
        if isinstance(err, OperationalError):
            # SQLite has no server to lose: its operational errors (a lock wait that already
            # had its 30 s busy timeout, a missing table, disk I/O) are not worth waiting out.
            if type(err.orig).__module__.startswith("sqlite3"):
                return False
            text = str(err.orig if err.orig is not None else err).lower()
            return "database is locked" not in text
        err = err.__cause__ or err.__context__
    return False


def call_with_retry(
    fn: Callable[[int], Any], what: str, on_retry: Callable[[], None] | None = None
):
    """``fn(attempt)`` until it succeeds, retrying disconnects for up to ``retry_seconds()``;
    ``attempt`` starts at 0 so that a write can check whether an earlier try got through."""
    deadline = time.monotonic() + retry_seconds()
    wait, attempt = _FIRST_WAIT, 0
    while True:
        try:
            return fn(attempt)
        except Exception as err:
            if not is_disconnect(err):
                raise
            if time.monotonic() + wait > deadline:
                raise StoreUnavailable(
                    f"the store stayed unreachable for {retry_seconds():.0f} s while {what}: "
                    f"{_reason(err)}"
                ) from None
            log.warning(
                "store unreachable while %s (%s); retrying in %.1f s", what, _reason(err), wait
            )
            if on_retry is not None:
                on_retry()
            time.sleep(wait)
            wait = min(wait * 2, _MAX_WAIT)
            attempt += 1


def _reason(err: BaseException) -> str:
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err).strip().splitlines()
    return text[0] if text else type(err).__name__

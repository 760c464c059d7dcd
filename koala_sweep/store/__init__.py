"""The one SQL store of koala-sweep: SQLite by default, PostgreSQL on clusters.

``open_store(url)`` connects, brings the schema up to date (or, for readers, checks it), and
gives the writer, the readers and Optuna's storage on the same database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from . import reader
from .engine import SQLITE_BUSY_TIMEOUT_MS, make_engine
from .models import METRIC_COLUMNS, TRIAL_STATES
from .reader import UnknownStudy
from .schema import SchemaError, current_revision, head_revision, require_current, upgrade
from .url import StoreURLError, mask_url, parse_url, resolve_url
from .writer import StoreConflict, StoreWriter, epoch_row


class StoreError(RuntimeError):
    """The store cannot be reached or used; the message names it with any password masked."""


@dataclass
class Store:
    url: str = field(repr=False)  # may hold a password: never printed, see masked_url
    engine: Engine = field(repr=False)

    def __repr__(self) -> str:
        return f"Store({self.masked_url})"

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    @property
    def writer(self) -> StoreWriter:
        return StoreWriter(self.engine)

    def studies(self) -> pd.DataFrame:
        return reader.studies_frame(self.engine)

    def study(self, name: str) -> dict:
        return reader.study_record(self.engine, name)

    def trials(self, study: str) -> pd.DataFrame:
        return reader.trials_frame(self.engine, study)

    def metrics(self, study: str) -> pd.DataFrame:
        return reader.metrics_frame(self.engine, study)

    def optuna_storage(self):
        """Optuna's RDB storage on the same database, so that ``optuna.load_study(
        study_name=..., storage=URL)`` and optuna-dashboard open a study's arms directly.
        Its calls retry while the database is unreachable, like the store's writes."""
        from .optuna_storage import RetryingRDBStorage

        kwargs = {}
        if parse_url(self.url).get_backend_name() == "sqlite":
            kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
        else:
            kwargs = {"pool_pre_ping": True}
        return RetryingRDBStorage(self.url, engine_kwargs=kwargs)

    def dispose(self) -> None:
        self.engine.dispose()


def _reason(err: OperationalError) -> str:
    # The driver's own first line ("connection refused", "password authentication failed for
    # user ..."): it never contains the password, unlike a URL.
    return str(err.orig).strip().splitlines()[0] if err.orig else type(err).__name__


def upgrade_store(url: str | None = None) -> tuple[str, str | None, str]:
    """``koala-sweep db upgrade``: returns (masked URL, revision before, revision after)."""
    resolved = resolve_url(url)
    masked = mask_url(resolved)
    engine = make_engine(resolved)
    try:
        before, after = upgrade(engine, masked)
    except OperationalError as err:
        raise StoreError(f"cannot use the store at {masked}: {_reason(err)}") from None
    finally:
        engine.dispose()
    return masked, before, after


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """Open the store at ``url`` (``--storage``, ``KOALA_SWEEP_STORAGE``, or the default).

    ``create=True`` (writers): create the schema in a new database or upgrade an older one.
    ``create=False`` (readers): the database must exist with the current schema.
    """
    resolved = resolve_url(url)
    masked = mask_url(resolved)
    engine = make_engine(resolved, create_dirs=create)
    try:
        if create:
            upgrade(engine, masked)
        else:
            require_current(engine, masked)
    except OperationalError as err:
        engine.dispose()
        raise StoreError(f"cannot use the store at {masked}: {_reason(err)}") from None
    except SchemaError:
        engine.dispose()
        raise
    return Store(resolved, engine)


__all__ = [
    "METRIC_COLUMNS",
    "TRIAL_STATES",
    "SchemaError",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoreURLError",
    "StoreWriter",
    "UnknownStudy",
    "current_revision",
    "epoch_row",
    "head_revision",
    "mask_url",
    "open_store",
    "upgrade_store",
    "resolve_url",
]

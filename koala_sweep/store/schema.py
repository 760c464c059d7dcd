"""Schema versions, managed by Alembic migrations in ``migrations/``.

A new database gets the latest schema; an older one is upgraded in place (never rebuilt, rows
kept); a database written by a newer koala-sweep is refused with a message saying so.
"""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import DBAPIError

VERSION_TABLE = "koala_sweep_alembic_version"
MIGRATIONS = Path(__file__).parent / "migrations"
# Tries at creating a new database's tables while other processes create them too, and the
# pause after the first failed one (growing by as much each time: 3 s in all).
CREATE_RACE_ATTEMPTS = 6
CREATE_RACE_PAUSE_S = 0.2


class SchemaError(RuntimeError):
    """The database's schema is not one this koala-sweep can use."""


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def check_not_newer(engine: Engine, masked_url: str) -> str | None:
    revision = current_revision(engine)
    if revision is not None and revision not in known_revisions():
        raise SchemaError(
            f"the database {masked_url} has schema revision {revision}, written by a newer "
            f"koala-sweep (this one knows up to {head_revision()}); upgrade koala-sweep to use it"
        )
    return revision


def upgrade(engine: Engine, masked_url: str, revision: str = "head") -> tuple[str | None, str]:
    """Bring the schema to ``revision``; returns (before, after).

    Launches that open a new database at the same moment race to create its tables: the
    loser's CREATE TABLE fails on a table the winner has just made (SQLite commits each CREATE
    TABLE by itself). When a version table exists after such a failure, another process is
    creating the schema: the loser waits a little and tries again, until the winner has
    recorded its revision and there is nothing left to do. Any other failure is raised as it
    is."""
    before = check_not_newer(engine, masked_url)
    cfg = _config()
    for attempt in range(1, CREATE_RACE_ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, revision)
            break
        except DBAPIError:
            if attempt == CREATE_RACE_ATTEMPTS or not inspect(engine).has_table(VERSION_TABLE):
                raise
            time.sleep(CREATE_RACE_PAUSE_S * attempt)
    return before, current_revision(engine) or ""


def require_current(engine: Engine, masked_url: str) -> None:
    """For readers: the schema must be the one this code knows (upgrading is a write)."""
    revision = check_not_newer(engine, masked_url)
    if revision is None:
        raise SchemaError(f"{masked_url} holds no koala-sweep store (no schema)")
    if revision != head_revision():
        raise SchemaError(
            f"{masked_url} has schema revision {revision}, older than {head_revision()}: "
            "run `koala-sweep db upgrade` first"
        )

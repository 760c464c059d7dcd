"""Connections to the store: SQLite tuned for one writer and many readers, or PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event

from .url import StoreURLError, mask_url, parse_url, sqlite_path

# How long a SQLite reader or writer waits for a lock before failing. With WAL, readers never
# block the writer and the writer never blocks readers; this covers checkpoints and the rare
# second writer (a report process upgrading the schema, say).
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, create_dirs: bool = True) -> Engine:
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        if create_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise StoreURLError(f"no database at {mask_url(parsed)}")
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            # WAL: one writer and any number of readers at the same time (the launcher writes
            # while reports and the dashboard read).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True)

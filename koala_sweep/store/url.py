"""Which database a command uses, and how its URL may be shown."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ENV_VAR = "KOALA_SWEEP_STORAGE"
DEFAULT_URL = "sqlite:///runs/koala_sweep.db"


class StoreURLError(ValueError):
    """A storage URL that cannot be used."""


def resolve_url(option: str | None = None) -> str:
    """``--storage`` if given, else ``KOALA_SWEEP_STORAGE``, else the embedded SQLite default
    (a file under ``runs/`` in the working directory: no server needed)."""
    return option or os.environ.get(ENV_VAR) or DEFAULT_URL


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreURLError(f"not a database URL: {mask_url(url)!r}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreURLError(
            f"unsupported database {parsed.get_backend_name()!r} in {mask_url(url)}: "
            "use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"
        )
    return parsed


def mask_url(url: str | URL) -> str:
    """The URL with any password replaced by ***: safe for output, logs, errors and reports."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        # Not parseable: hide whatever sits between "://user:" and "@".
        head, sep, rest = url.partition("://")
        if sep and "@" in rest:
            creds, _, host = rest.rpartition("@")
            user = creds.split(":", 1)[0]
            return f"{head}://{user}:***@{host}"
        return url


def sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)

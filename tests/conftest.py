"""Shared fixtures and helpers of the test suite."""

from __future__ import annotations

import os as _os

# Before any test module imports Ray: the test session's local Ray binds 127.0.0.1 only.
_os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "koalapp_reference.pt"


@pytest.fixture(scope="session")
def golden_scenarios() -> list[dict]:
    # weights_only=True: the file is data, never code.
    return torch.load(GOLDEN, weights_only=True)


def tiny_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(
        dtype
    )


def classification_batch(step: int, n: int = 16, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n, 6, generator=g).to(dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def train_steps(
    model, opt, steps, *, start: int = 0, scheduler=None, dtype=torch.float32, fixed_batch=False
):
    """Plain KOALA training: per-sample cross-entropy, L = mean, V = mean of squares."""
    losses = []
    for k in range(start, start + steps):
        x, y = classification_batch(0 if fixed_batch else k, dtype=dtype)
        per_sample = torch.nn.functional.cross_entropy(model(x).float(), y, reduction="none")
        loss = per_sample.mean()
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss, loss_var=(per_sample.detach() ** 2).mean())
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses


# ------------------------------------------------------------------------ databases
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(command: str) -> None:
    subprocess.run(["su", "postgres", "-c", command], check=True, capture_output=True, timeout=120)


class PostgresServer:
    """A throwaway PostgreSQL 15 server on 127.0.0.1 (initdb as user postgres, free port)."""

    def __init__(self) -> None:
        # Not under pytest's tmp dirs: those are private to root, and the server runs as
        # postgres.
        self.base = Path(tempfile.mkdtemp(prefix="koala-sweep-pg-"))
        shutil.chown(self.base, "postgres", "postgres")
        self.data = self.base / "data"
        self.port = _free_port()
        _as_postgres(f"{PG_BIN}/initdb -D {self.data} -U postgres -A trust")
        self.start()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        _as_postgres(
            f"{PG_BIN}/pg_ctl -D {self.data} -l {self.base}/server.log -w -o "
            f"'-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1' start"
        )

    def stop(self) -> None:
        _as_postgres(f"{PG_BIN}/pg_ctl -D {self.data} -m fast -w stop")

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def require_postgres_binaries() -> None:
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        reason = "needs PostgreSQL 15 server binaries and root (initdb runs as user postgres)"
        if os.environ.get("KOALA_SWEEP_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on 127.0.0.1 for the whole test session (or the server
    named by KOALA_SWEEP_TEST_POSTGRES). CI sets KOALA_SWEEP_REQUIRE_POSTGRES so that a missing
    server fails the run instead of skipping the PostgreSQL half of the store tests."""
    given = os.environ.get("KOALA_SWEEP_TEST_POSTGRES")
    if given:
        yield given
        return
    require_postgres_binaries()
    server = PostgresServer()
    try:
        yield server.url
    finally:
        server.remove()


def _admin(server_url: str, sql: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the test server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    _admin(postgres_server, f'CREATE DATABASE "{name}"')
    yield f"{postgres_server}/{name}"
    _admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Every store test runs against both backends, each a real database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return request.getfixturevalue("postgres_url")


# ------------------------------------------------------------------------------ Ray


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (starting Ray takes about 5 s)."""
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    yield
    ray.shutdown()


# -------------------------------------------------------------------------- browser

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


class PageWatch:
    """A page with every JavaScript error and every network request it made recorded."""

    def __init__(self, page) -> None:
        self.page, self.errors, self.requests = page, [], []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: self.requests.append(r.url))

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def watched_page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    yield PageWatch(page)
    page.close()

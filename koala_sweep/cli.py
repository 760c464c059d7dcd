"""The ``koala-sweep`` command line. Thin: it parses arguments and calls the package."""

from __future__ import annotations

from typing import Any

import typer
import yaml

from . import __version__

app = typer.Typer(
    name="koala-sweep",
    help=(
        "Hyperparameter sensitivity studies of the KOALA++ optimizer (Q, R, learning rate, "
        "variant) against Adam and SGD tuned on the same budget."
    ),
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"koala-sweep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Hyperparameter sensitivity studies of KOALA++ against Adam and SGD."""


@app.command()
def info() -> None:
    """Print the versions of koala-sweep and its main libraries, and the compute devices."""
    from .environment import describe_environment

    for key, value in describe_environment().items():
        typer.echo(f"{key}: {value}")


def _key_values(pairs: list[str], option: str) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars or lists, as in study files
    (``0.1`` is a number, ``[30, 60]`` a list, ``adaptive`` a string)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} expects key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ValueError(f"{option} {key.strip()}: cannot read the value {raw!r}") from None
    return out


@app.command()
def train(
    workload: str = typer.Option(..., help="a workload name (see below)"),
    optimizer: str = typer.Option(..., help="koalapp, koala_v, adam, adamw or sgd"),
    set_: list[str] = typer.Option(
        [], "--set", help="a hyperparameter, key=value (repeatable), as in study files"
    ),
    arg: list[str] = typer.Option(
        [], "--arg", help="a workload argument, key=value (repeatable), e.g. train_size=2000"
    ),
    epochs: int = typer.Option(2, min=1, help="epochs to train"),
    seed: int = typer.Option(0, help="seed of the model initialisation and the batch order"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    amp: bool = typer.Option(False, help="bfloat16 autocast on CUDA"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per epoch"),
) -> None:
    """Train one configuration without Ray and print its metrics epoch by epoch."""
    from .console import EpochPrinter, error
    from .optim.registry import HyperparameterError
    from .workloads import WorkloadError
    from .workloads.loop import run_trial

    try:
        hp = _key_values(set_, "--set")
        workload_args = _key_values(arg, "--arg")
        reports = run_trial(
            workload,
            optimizer,
            hp,
            epochs=epochs,
            seed=seed,
            workload_args=workload_args,
            device=device,
            amp=amp,
        )
        printer = EpochPrinter(as_json)
        for report in reports:
            printer.row(report.epoch, report.metrics, report.diverged, report.reason)
    except (WorkloadError, HyperparameterError, ValueError) as err:
        error(str(err))
        raise typer.Exit(2) from None


db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

STORAGE_HELP = (
    "SQLAlchemy URL of the store (default: $KOALA_SWEEP_STORAGE, else "
    "sqlite:///runs/koala_sweep.db)"
)


@db_app.command("upgrade")
def db_upgrade(storage: str = typer.Option(None, help=STORAGE_HELP)) -> None:
    """Create the store's schema, or upgrade an older one in place (rows are kept)."""
    from .console import error, stdout
    from .store import SchemaError, StoreError, StoreURLError, upgrade_store

    try:
        masked, before, after = upgrade_store(storage)
    except (SchemaError, StoreError, StoreURLError) as err:
        error(str(err))
        raise typer.Exit(2) from None
    if before == after:
        stdout.print(f"{masked}: schema is current (revision {after})")
    else:
        stdout.print(f"{masked}: schema {before or 'none'} -> {after}")


@app.command()
def export(
    study: str = typer.Argument(..., help="the study's name"),
    output: str = typer.Option(..., "-o", "--output", help="file to write"),
    fmt: str = typer.Option("csv", "--format", help="csv, parquet or json"),
    metrics: bool = typer.Option(False, "--metrics", help="one row per trial-epoch"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Write a study's trials (or, with --metrics, its trial-epochs) to a file."""
    from pathlib import Path

    from .console import error, stdout
    from .export import FORMATS, export_frame, write_frame
    from .store import SchemaError, StoreError, StoreURLError, UnknownStudy, open_store

    if fmt not in FORMATS:
        error(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        raise typer.Exit(2)
    try:
        store = open_store(storage, create=False)
        frame = export_frame(store, study, metrics=metrics)
    except (UnknownStudy, SchemaError, StoreError, StoreURLError) as err:
        error(str(err.args[0] if isinstance(err, UnknownStudy) else err))
        raise typer.Exit(2) from None
    write_frame(frame, Path(output), fmt)
    stdout.print(f"wrote {len(frame)} rows to {output}")


@app.command()
def launch(
    study_file: str = typer.Argument(..., help="a study file, e.g. studies/q_r.yaml"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    address: str = typer.Option(
        None, help="an existing Ray cluster: auto or HOST:PORT (default: a local Ray)"
    ),
) -> None:
    """Run a study (or resume it: the same command again continues where it stopped)."""
    from .console import error, stdout
    from .spec import SpecError
    from .store import SchemaError, StoreConflict, StoreError, StoreURLError
    from .store.retry import StoreUnavailable

    if address is None or address.split(":")[0] in ("127.0.0.1", "localhost"):
        import os

        # Before Ray is imported: a local Ray (or a cluster on this machine's loopback) is
        # then reached on 127.0.0.1 instead of the machine's external address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        from .tune.launcher import launch as run_launch

        result = run_launch(study_file, storage=storage, address=address, console=stdout)
    except (SpecError, StoreConflict, SchemaError, StoreError, StoreURLError) as err:
        error(str(err))
        raise typer.Exit(2) from None
    except StoreUnavailable as err:
        # Not the user's input: the database went away for longer than the retry window.
        # What was finished is in the store; the same command resumes the study.
        error(f"{err}; run the same command again to resume once the store is back")
        raise typer.Exit(1) from None
    stdout.print(f"\nResults are in {result.storage} (study {result.study}). See them with:")
    stdout.print(f"  koala-sweep report {result.study}" + _storage_flag(storage))
    stdout.print("  koala-sweep dashboard" + _storage_flag(storage))
    stdout.print(f"  koala-sweep status {result.study}" + _storage_flag(storage))
    stdout.print(
        f"  koala-sweep export {result.study} -o {result.study}.csv" + _storage_flag(storage)
    )
    _print_status(result.study, storage)


def _storage_flag(storage: str | None) -> str:
    return f" --storage '{storage}'" if storage else ""


def _print_status(study: str, storage: str | None) -> None:
    from rich.table import Table

    from .console import stdout
    from .store import open_store
    from .summary import STATES, arm_summary, format_params

    store = open_store(storage, create=False)
    record = store.study(study)
    summary = arm_summary(store.trials(study), record["direction"])
    store.dispose()
    table = Table(
        title=f"{study}: {record['workload']}, {record['metric']} ({record['direction']})"
    )
    for col in ("arm", "optimizer", *(s.lower() for s in STATES), "best"):
        table.add_column(col)
    for _, row in summary.iterrows():
        best = row["best_value"]
        table.add_row(
            row["arm"],
            row["optimizer"],
            *(str(row[s.lower()]) for s in STATES),
            "-" if best != best else f"{best:.4g}",
        )
    stdout.print(table)
    for _, row in summary.iterrows():
        if row["best_params"]:
            stdout.print(f"best {row['arm']}: {format_params(row['best_params'])}")


@app.command()
def status(
    study: str = typer.Argument(None, help="a study's name (default: list the studies)"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Per arm: trial counts by state and the best configuration (or list the studies)."""
    from .console import error, stdout
    from .store import SchemaError, StoreError, StoreURLError, UnknownStudy, open_store

    try:
        if study is None:
            store = open_store(storage, create=False)
            frame = store.studies()
            store.dispose()
            if frame.empty:
                stdout.print("no studies in the store")
            for _, row in frame.iterrows():
                stdout.print(f"{row['study']}: {row['workload']}, {row['trials']} trials")
            return
        _print_status(study, storage)
    except (UnknownStudy, SchemaError, StoreError, StoreURLError) as err:
        error(str(err.args[0] if isinstance(err, UnknownStudy) else err))
        raise typer.Exit(2) from None


@app.command()
def report(
    study: str = typer.Argument(..., help="the study's name"),
    output: str = typer.Option(
        None,
        "-o",
        "--output",
        help="file (html) or folder (png, pdf) to write; default reports/<study>.html or "
        "reports/<study>-<format>/",
    ),
    fmt: str = typer.Option("html", "--format", help="html, png or pdf"),
    layout: str = typer.Option(None, help="a layout file (default dashboards/default.yaml)"),
    storage: str = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Write a study's report: one self-contained HTML file that works offline (summary
    table first, then every figure, the study file and the environment), or its figures as
    PNG or PDF files."""
    from pathlib import Path

    from .console import error, stdout
    from .report import FORMATS, LayoutError, load_layout, write_report
    from .report.images import ImageExportError
    from .store import SchemaError, StoreError, StoreURLError, UnknownStudy, open_store

    if fmt not in FORMATS:
        error(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        raise typer.Exit(2)
    try:
        chosen = load_layout(layout)
        store = open_store(storage, create=False)
        paths = write_report(store, study, Path(output) if output else None, fmt, chosen)
    except (UnknownStudy, SchemaError, StoreError, StoreURLError, LayoutError) as err:
        error(str(err.args[0] if isinstance(err, UnknownStudy) else err))
        raise typer.Exit(2) from None
    except ImageExportError as err:
        error(str(err))
        raise typer.Exit(1) from None
    if fmt == "html":
        stdout.print(f"wrote {paths[0]} (open it in a browser; it works offline)")
    else:
        stdout.print(f"wrote {len(paths)} {fmt.upper()} files to {paths[0].parent}")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@app.command()
def dashboard(
    storage: str = typer.Option(None, help=STORAGE_HELP),
    host: str = typer.Option(
        "127.0.0.1", help="address to listen on; anything but loopback exposes the store"
    ),
    port: int = typer.Option(8050, min=1, max=65535, help="port to listen on"),
    layout: str = typer.Option(None, help="a layout file (default dashboards/default.yaml)"),
    refresh: float = typer.Option(5.0, min=0.5, help="seconds between checks for new results"),
) -> None:
    """Serve the live dashboard: a study picker and the report's panels, refreshed while a
    study runs. Listens on 127.0.0.1 unless --host says otherwise."""
    from .console import error, stdout
    from .report import LayoutError, load_layout
    from .report.app import create_app
    from .store import SchemaError, StoreError, StoreURLError, open_store

    try:
        chosen = load_layout(layout)
        store = open_store(storage, create=False)
    except (SchemaError, StoreError, StoreURLError, LayoutError) as err:
        error(str(err))
        raise typer.Exit(2) from None
    if host not in LOOPBACK_HOSTS:
        stdout.print(
            f"warning: listening on {host}: anyone who can reach it can read the "
            "store's studies (no authentication)"
        )
    stdout.print(
        f"koala-sweep dashboard on http://{host}:{port}/ (store "
        f"{store.masked_url}); Ctrl-C stops it"
    )
    import logging

    # One line per browser request (every refresh tick) would drown the useful output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    create_app(store, chosen, refresh_seconds=refresh).run(host=host, port=port, debug=False)


def main() -> None:
    app()

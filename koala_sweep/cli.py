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


def main() -> None:
    app()

"""The ``koala-sweep`` command line. Thin: it parses arguments and calls the package."""

from __future__ import annotations

import typer

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


def main() -> None:
    app()

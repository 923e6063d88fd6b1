"""Placeholder: being written."""
import typer


def train() -> None:
    """Not implemented yet."""
    raise typer.Exit(1)


def evaluate() -> None:
    """Not implemented yet."""
    raise typer.Exit(1)


def backtest() -> None:
    """Not implemented yet."""
    raise typer.Exit(1)

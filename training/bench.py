"""Placeholder: being written."""
import typer


def bench() -> None:
    """Not implemented yet."""
    raise typer.Exit(1)

"""Placeholder: being written."""
import typer


def synth() -> None:
    """Not implemented yet."""
    raise typer.Exit(1)

"""Placeholder: being written."""
import typer


def serve() -> None:
    """Not implemented yet."""
    raise typer.Exit(1)

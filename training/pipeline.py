"""Placeholder: being written."""
import typer


def demo() -> None:
    """Not implemented yet."""
    raise typer.Exit(1)

"""Placeholder: being written."""
import typer


def export_command() -> None:
    """Not implemented yet."""
    raise typer.Exit(1)

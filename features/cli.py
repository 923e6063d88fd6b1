"""Placeholder: being written."""
import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def info() -> None:
    """Not implemented yet."""

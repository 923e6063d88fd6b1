"""The `aqcast` command line: one root that gathers each package's commands.

Every command module keeps heavy imports (torch, mlflow, bentoml) inside its functions so `aqcast --help`
stays fast. User errors (`features.errors.DataError`) print one line per problem and exit 2.
"""
from __future__ import annotations

import os
import sys

import typer

from features.errors import DataError

for _k, _v in {"MLFLOW_DISABLE_TELEMETRY": "true", "BENTOML_DO_NOT_TRACK": "true",
               "ORT_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}.items():
    os.environ.setdefault(_k, _v)


def build_app() -> typer.Typer:
    """Assemble the root command from the packages' command modules."""
    from features import cli as features_cli
    from features.synth import cli as synth_cli
    from serving import cli as serving_cli
    from training import bench, commands, export, pipeline, runs

    app = typer.Typer(help="aqcast: hourly PM2.5 and ozone forecasts for every grid cell, 1-72 h ahead.",
                      no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.add_typer(features_cli.app, name="features", help="Build and inspect the gridded feature store.")
    app.command("synth")(synth_cli.synth)
    app.command("train")(commands.train)
    app.command("evaluate")(commands.evaluate)
    app.command("backtest")(commands.backtest)
    app.command("promote")(commands.promote)
    app.command("runs")(runs.runs_command)
    app.command("export")(export.export_command)
    app.command("serve")(serving_cli.serve)
    app.command("bento")(serving_cli.bento)
    app.command("demo")(pipeline.demo)
    app.command("bench")(bench.bench)
    return app


def main() -> None:
    """Console-script entry point."""
    try:
        rc = build_app()(standalone_mode=False)
        if isinstance(rc, int) and rc != 0:
            sys.exit(rc)
    except DataError as err:
        for problem in err.problems:
            typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except typer.Abort:
        typer.secho("aborted", err=True)
        sys.exit(130)
    except _click_errors() as ex:  # usage errors: unknown command or option, bad value
        ex.show()
        sys.exit(ex.exit_code)


def _click_errors() -> tuple[type[Exception], ...]:
    """ClickException as raised by the installed typer: click's own, and the copy typer >= 0.2x vendors as
    `typer._click` (its usage errors are not click's, so catching click's alone let them out as tracebacks)."""
    import importlib

    found = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(name).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)

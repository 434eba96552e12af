"""The `dsvc` command line: a thin click layer over `dsvc.Repo`.

This package is the only place that reads the environment, the terminal and the current directory.
Errors print one line (`dsvc: error: ...`) and exit 1; usage errors exit 2; `--debug` shows tracebacks.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import click

from dsvc.cli.output import Output, error
from dsvc.errors import DsvcError

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class DsvcGroup(click.Group):
    """Turns every DsvcError and OS error into one readable line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except DsvcError as exc:
            self._fail(ctx, str(exc))
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            self._fail(ctx, f"{where}{exc.strerror or exc}")
        except KeyboardInterrupt:
            click.echo("dsvc: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # an unexpected exception is a bug: say so in one line
            self._fail(ctx, f"internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)")

    def _fail(self, ctx: click.Context, message: str) -> None:
        out = ctx.find_object(Output)
        if out is not None and out.debug:
            traceback.print_exc()
        error(message)
        ctx.exit(EXIT_FAILURE)


@click.group(cls=DsvcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dsvc", prog_name="dsvc")
@click.option(
    "-C", "directory", type=click.Path(file_okay=False, path_type=Path), help="Run as if started in DIR."
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, directory: Path | None, debug: bool) -> None:
    """dsvc: version control for ML datasets (frames, labels, checkpoints, metrics).

    \b
    Examples:
      dsvc init
      dsvc hash-object images/0001.jpg
      dsvc rev-parse HEAD
      dsvc fsck
    """
    ctx.obj = Output(debug=debug)
    ctx.meta["cwd"] = directory.resolve() if directory else Path.cwd()


from dsvc.cli import diff, metrics, plumbing, remote, versions, workdir  # noqa: E402  (the commands)

for _module in (plumbing, workdir, versions, diff, metrics, remote):
    for _command in _module.COMMANDS:
        main.add_command(_command)

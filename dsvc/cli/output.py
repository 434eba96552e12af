"""All terminal output goes through here: human text, `--json`, `-q`, errors, and progress bars.

Progress bars (rich) appear only when stderr is a terminal; JSON goes to stdout alone so it can be piped.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import orjson

T = TypeVar("T")


@dataclass
class Output:
    """How this invocation reports: quiet, JSON, and whether a terminal is watching."""

    quiet: bool = False
    json: bool = False
    debug: bool = False

    def echo(self, message: str = "") -> None:
        """Print a line for people; silent under -q or --json."""
        if not (self.quiet or self.json):
            click.echo(message)

    def data(self, value: Any) -> None:
        """Print a JSON document (under --json)."""
        sys.stdout.buffer.write(
            orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
        )
        sys.stdout.flush()

    def report(self, value: Any, text: str) -> None:
        """Print value as JSON under --json, else the human text."""
        if self.json:
            self.data(value)
        else:
            self.echo(text)

    def progress(self, items: Iterable[T], total: int | None, label: str) -> Iterator[T]:
        """Wrap an iterable in a progress bar when stderr is a terminal and output is not quiet."""
        if self.quiet or not sys.stderr.isatty():
            yield from items
            return
        from rich.progress import Progress  # imported here: rich costs start-up time for every command

        with Progress(transient=True, console=_stderr_console()) as bar:
            task = bar.add_task(label, total=total)
            for item in items:
                yield item
                bar.advance(task)

    @contextlib.contextmanager
    def meter(self, label: str) -> Iterator[Callable[[int], None]]:
        """A counter to advance as work is done (objects sent or fetched), shown on a terminal only."""
        if self.quiet or not sys.stderr.isatty():
            yield lambda _: None
            return
        from rich.progress import Progress

        with Progress(transient=True, console=_stderr_console()) as bar:
            task = bar.add_task(label, total=None)
            yield lambda n: bar.advance(task, n)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def error(message: str) -> None:
    """Print one error line on stderr."""
    click.echo(f"dsvc: error: {message}", err=True)

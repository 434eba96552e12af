"""Helpers every command shares: --json and -q, opening the repository, who is acting."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dsvc.cli.output import Output
from dsvc.history import signature
from dsvc.objects import Signature
from dsvc.repo import Repo

F = TypeVar("F", bound=Callable[..., Any])


def reporting(func: F) -> F:
    """Add --json and -q to a command that reports something."""

    def set_json(ctx: click.Context, _: click.Parameter, value: bool) -> None:
        ctx.ensure_object(Output).json = value

    def set_quiet(ctx: click.Context, _: click.Parameter, value: bool) -> None:
        ctx.ensure_object(Output).quiet = value

    func = click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=set_json,
        help="Print machine-readable JSON on stdout.",
    )(func)
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=set_quiet,
        help="Print nothing but errors.",
    )(func)


STORE_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")


def store_env() -> dict[str, str]:
    """The standard object-store settings of the environment (credentials, region, endpoint), lowercased
    as obstore names them; handed to remotes, never written anywhere."""
    return {k.lower(): v for k, v in os.environ.items() if k.startswith(STORE_ENV_PREFIXES)}


def open_repo(ctx: click.Context) -> Repo:
    """Open the repository the command runs in."""
    return Repo.discover(cwd(ctx), store_env())


def cwd(ctx: click.Context) -> Path:
    """The folder the command runs in (`-C DIR` or the current directory)."""
    return Path(ctx.find_root().meta["cwd"])


def output(ctx: click.Context) -> Output:
    """The output settings of this invocation."""
    out = ctx.find_object(Output)
    assert out is not None
    return out


def identity(repo: Repo) -> Signature:
    """Who is acting: DSVC_AUTHOR_NAME/EMAIL, else the repository's [user] config, else the login."""
    name = os.environ.get("DSVC_AUTHOR_NAME") or repo.config.get("user", "name") or getpass.getuser()
    email = os.environ.get("DSVC_AUTHOR_EMAIL") or repo.config.get("user", "email")
    return signature(name, email or f"{name}@{socket.gethostname()}")

"""Remotes in the repository config: `[remote "NAME"]` with url, endpoint, region and media.

Only where to find a remote is stored; credentials come from the caller's environment (the CLI passes
the standard variables down) and are never written here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dsvc.config import Config
from dsvc.errors import InvalidInput
from dsvc.remote.backends import open_backend
from dsvc.remote.sync import Remote

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MEDIA_LAZY = "lazy"


@dataclass(frozen=True)
class RemoteSettings:
    name: str
    url: str
    endpoint: str | None = None
    region: str | None = None
    lazy_media: bool = False


def check_remote_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith(".lock") or ".." in name:
        raise InvalidInput(f"invalid remote name: {name!r} (letters, digits, '.', '_' and '-')")
    return name


def _section(name: str) -> str:
    return f'remote "{check_remote_name(name)}"'


def remotes(config: Config) -> dict[str, RemoteSettings]:
    out = {}
    for section in config.sections("remote "):
        name = section[len("remote ") :].strip('"')
        items = config.items(section)
        out[name] = RemoteSettings(
            name, items["url"], items.get("endpoint"), items.get("region"), items.get("media") == MEDIA_LAZY
        )
    return out


def add_remote(config: Config, settings: RemoteSettings) -> None:
    section = _section(settings.name)
    if section in config.sections():
        raise InvalidInput(f"remote {settings.name!r} exists already")
    open_backend(settings.url)  # refuse a URL no backend understands before saving it
    config.set(section, "url", settings.url)
    for key, value in (("endpoint", settings.endpoint), ("region", settings.region)):
        if value:
            config.set(section, key, value)
    if settings.lazy_media:
        config.set(section, "media", MEDIA_LAZY)
    config.save()


def remove_remote(config: Config, name: str) -> None:
    if not config.remove_section(_section(name)):
        raise InvalidInput(f"no such remote: {name}")
    config.save()


def cache_dir(dsvc_dir: Path, name: str) -> Path:
    """Where a remote's pack indexes are cached (they never change on the remote)."""
    return dsvc_dir / "remotes" / check_remote_name(name) / "packs"


def open_remote(config: Config, dsvc_dir: Path, name: str, env: Mapping[str, str]) -> Remote:
    found = remotes(config).get(check_remote_name(name))
    if found is None:
        raise InvalidInput(f"no such remote: {name} (add it with 'dsvc remote add {name} URL')")
    backend = open_backend(found.url, found.endpoint, found.region, env)
    return Remote(name, backend, cache_dir(dsvc_dir, name))


def lazy_media_remote(config: Config) -> str | None:
    """The remote a clone without media fetches blobs from on demand, if any."""
    return next((r.name for r in remotes(config).values() if r.lazy_media), None)

"""Repository configuration: `.dsvc/config`, git-style INI, versioned.

Only the CLI reads the environment; everything else gets its settings from here or from arguments.
"""

from __future__ import annotations

import configparser
import io
from pathlib import Path

from dsvc.atomic import write_file
from dsvc.errors import InvalidInput, UnsupportedFormat

REPO_FORMAT = 1


class Config:
    """The parsed config of one repository; `save` writes it back atomically."""

    def __init__(self, path: Path, parser: configparser.ConfigParser) -> None:
        self.path = path
        self._parser = parser

    @classmethod
    def create(cls, path: Path) -> Config:
        parser = configparser.ConfigParser(interpolation=None)
        parser["core"] = {"format": str(REPO_FORMAT), "compression": "3"}
        config = cls(path, parser)
        config.save()
        return config

    @classmethod
    def load(cls, path: Path) -> Config:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
        except configparser.Error as exc:
            raise InvalidInput(f"malformed config: {exc.message}", path=str(path)) from None
        config = cls(path, parser)
        version = config.get_int("core", "format", 0)
        if version > REPO_FORMAT:
            raise UnsupportedFormat(
                f"{path}: repository format {version} is newer than this dsvc understands ({REPO_FORMAT}); "
                "upgrade dsvc"
            )
        if version < 1:
            raise InvalidInput("missing or invalid core.format", path=str(path))
        return config

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        return self._parser.get(section, key, fallback=default)

    def get_int(self, section: str, key: str, default: int) -> int:
        value = self.get(section, key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise InvalidInput(
                f"{section}.{key} must be an integer, got {value!r}", path=str(self.path)
            ) from None

    def get_bool(self, section: str, key: str, default: bool) -> bool:
        value = self.get(section, key)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise InvalidInput(f"{section}.{key} must be true or false, got {value!r}", path=str(self.path))

    def set(self, section: str, key: str, value: str) -> None:
        if not self._parser.has_section(section):
            self._parser.add_section(section)
        self._parser.set(section, key, value)

    def remove_section(self, section: str) -> bool:
        return self._parser.remove_section(section)

    def sections(self, prefix: str = "") -> list[str]:
        return [s for s in self._parser.sections() if s.startswith(prefix)]

    def items(self, section: str) -> dict[str, str]:
        return dict(self._parser.items(section)) if self._parser.has_section(section) else {}

    def save(self) -> None:
        out = io.StringIO()
        self._parser.write(out)
        write_file(self.path, out.getvalue().encode())

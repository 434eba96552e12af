"""The exception tree: every failure a user can cause or meet is a DsvcError with an actionable message."""

from __future__ import annotations


class DsvcError(Exception):
    """Base of every error dsvc reports to a user; the CLI prints its message on one line."""


class NotARepository(DsvcError):
    """Raised when a command needs a repository and none is found."""


class BadRevision(DsvcError, ValueError):
    """Raised when a revision string names nothing, or is ambiguous."""


class InvalidInput(DsvcError, ValueError):
    """Raised for malformed user input; names the file and the place when there is one."""

    def __init__(self, message: str, *, path: str | None = None, location: str | None = None) -> None:
        where = ":".join(part for part in (path, location) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.location = location


class CorruptObject(DsvcError):
    """Raised when stored bytes do not hash to their id or cannot be decoded: nothing returns wrong data."""


class ObjectMissing(DsvcError, KeyError):
    """Raised when an object id is not in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "object missing"


class UnsupportedFormat(DsvcError):
    """Raised when a file or object carries a format version newer than this dsvc understands."""


class RefConflict(DsvcError):
    """Raised when a compare-and-swap ref update finds a value other than the expected one."""


class NonFastForward(RefConflict):
    """Raised when a ref update would drop commits the ref already has."""


class LockHeld(DsvcError):
    """Raised when another process holds the repository's writer lock for too long."""


class RemoteError(DsvcError):
    """Raised when a remote cannot be reached or answers something invalid."""

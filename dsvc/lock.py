"""The repository's writer lock: one writer at a time, readers never block.

`.dsvc/lock` is held with `flock`, so a crashed holder releases it automatically (no stale lock to clean
up); the holder writes its pid and host into it so a waiting process can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from dsvc.errors import LockHeld

DEFAULT_WAIT_S = 30.0
POLL_S = 0.05


class WriterLock:
    """Context manager holding `.dsvc/lock` exclusively; waits up to `wait_s`, then raises LockHeld."""

    def __init__(
        self, path: Path, wait_s: float = DEFAULT_WAIT_S, on_acquire: Callable[[], None] | None = None
    ) -> None:
        """on_acquire runs each time the lock is newly taken: the moment no other writer can be running."""
        self.path = path
        self.wait_s = wait_s
        self.on_acquire = on_acquire
        self._fd: int | None = None
        self._depth = 0

    def holder(self) -> str:
        """Describe the process that holds the lock, from what it wrote there."""
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return "another process"
        return text or "another process"

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockHeld(
                        f"the repository is locked by {self.holder()} ({self.path}); "
                        "try again when it finishes"
                    ) from None
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        self._depth = 1
        if self.on_acquire is not None:
            try:
                self.on_acquire()
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        self._depth -= 1
        if self._depth or self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

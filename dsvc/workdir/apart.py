"""A call run in a second Python process, so that pure-Python work (rendering annotation sources) uses
the second core while this process writes files.

A fresh interpreter, not multiprocessing: that would import the caller's main script again in the child
(a user's script calling `checkout` at its top level would run twice). Two pipes of its own carry the
call: this process's `sys.path`, then the function (by its qualified name) and its arguments, pickled;
back comes the result, or the exception the call raised, pickled. Only module-level functions of this
package are sent, between two processes of the same program. The child's output goes to a temporary
file, whose last line names the failure if the child dies.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import IO, Any, Generic, TypeVar

from dsvc.errors import DsvcError

R = TypeVar("R")

# Run by the child, given its two pipes: take the parent's import path, then serve one call.
_CHILD = (
    "import os, pickle, sys; request = os.fdopen(int(sys.argv[1]), 'rb'); "
    "sys.path[:0] = pickle.load(request); "
    "from dsvc.workdir.apart import serve; serve(request, os.fdopen(int(sys.argv[2]), 'wb'))"
)


class Apart(Generic[R]):
    """`func(*args)` running in a child process; `result` waits for it and returns or raises as the call
    did. Use it as a context manager so the child is always waited for."""

    def __init__(self, func: Callable[..., R], *args: Any) -> None:
        request_in, request_out = os.pipe()
        reply_in, reply_out = os.pipe()
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(request_in), str(reply_out)],
                pass_fds=(request_in, reply_out),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
            )
        finally:
            os.close(request_in)
            os.close(reply_out)
        self._reply = os.fdopen(reply_in, "rb")
        try:
            with os.fdopen(request_out, "wb") as request:
                pickle.dump(list(sys.path), request)
                pickle.dump((func, args), request)
        except BrokenPipeError:  # the child died at once: `result` reports why
            pass

    def result(self) -> R:
        with self._reply:
            answer = self._reply.read()
        code = self._child.wait()
        if code != 0 or not answer:
            raise DsvcError(f"a helper process of dsvc stopped (exit code {code}){self._last_words()}")
        try:
            done, value = pickle.loads(answer)
        except Exception as exc:  # an exception the child pickled that will not unpickle here
            raise DsvcError(f"a helper process of dsvc sent back what this one cannot read: {exc}") from None
        if not done:
            raise value
        return value  # type: ignore[no-any-return]

    def _last_words(self) -> str:
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return f": {lines[-1][:300]}" if lines else ""

    def __enter__(self) -> Apart[R]:
        return self

    def __exit__(self, *_: object) -> None:
        self._reply.close()
        self._child.wait()
        self._log.close()


def serve(request: IO[bytes], reply: IO[bytes]) -> None:
    """The child's side: one call read from request, its outcome written to reply."""
    with request:
        func, args = pickle.load(request)
    try:
        outcome: tuple[bool, Any] = (True, func(*args))
    except Exception as exc:  # handed to the parent, which raises it
        outcome = (False, exc)
    try:
        answer = pickle.dumps(outcome)
    except Exception as exc:  # what cannot be pickled still reaches the parent, as text
        failure = exc if outcome[0] else outcome[1]
        answer = pickle.dumps((False, DsvcError(str(failure) or type(failure).__name__)))
    with reply:
        reply.write(answer)

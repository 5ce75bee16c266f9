"""Stop signals turned into an exception, so a command's `finally` runs, then honoured.

uvicorn handles SIGINT and SIGTERM itself while it serves; after its graceful
shutdown it restores the handlers it found and raises the signal again. With
Python's default SIGTERM disposition that kills the process on the spot: no
`finally`, no `atexit`, and the embedded `redis-server` that `arbiter serve`
started is left running, owned by nobody. Inside :func:`stop_signals_raise`
both signals raise :class:`Stopped` instead; the caller cleans up and then
calls :func:`die_of`, so the process still ends the way its supervisor
expects (killed by the signal it sent).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

__all__ = ["STOP_SIGNALS", "Stopped", "die_of", "stop_signals_raise"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A stop signal arrived (BaseException, like KeyboardInterrupt: nothing should catch it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """A second signal while cleaning up must not cut the cleanup short."""


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Stopped`; afterwards they are ignored.

    Ignored afterwards so that the cleanup that follows runs to its end; the
    caller then ends the process with :func:`die_of` or returns normally.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stopped)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, _ignore)


def die_of(signum: int) -> NoReturn:
    """End this process by ``signum`` with its default disposition (exit status 128 + n)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    # Unreachable unless the signal is blocked; exit with the shell's convention then.
    raise SystemExit(128 + signum)

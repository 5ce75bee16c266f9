"""Decision log files: rotating JSON-lines files on disk, and reading them back.

`RotatingFiles` appends records (one JSON object a line) to a file in a
directory and starts a new file when the current one passes a size or an age.
With ``gzip=True`` a file is compressed when it is rotated out (or closed):
the file being written is always plain JSON lines, so a crash loses nothing
already written and leaves a readable file. File names sort in time order:
``<prefix>-<UTC start>-<pid>-<seq>.jsonl[.gz]`` (the pid keeps several
workers writing to one directory apart).

`read_records` reads files, `.gz` files and directories of them (in name
order) and reports a malformed line by file and line number.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

import msgspec

from arbiter.dsl.errors import ArbiterError
from arbiter.engine.records import RECORD_DECODER, DecisionRecord

__all__ = ["LogReadError", "RotatingFiles", "log_files", "read_lines", "read_records"]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_SECONDS = 3600.0


class LogReadError(ArbiterError):
    """A decision log file is missing or holds a line that is not a decision record."""

    code = "bad-decision-log"


class RotatingFiles:
    """Append-only JSON-lines files rotated by size and age, optionally gzipped when done.

    Not thread-safe: one writer (the decision log's batch task, or `logs
    export`) owns an instance.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        prefix: str = "decisions",
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        gzip: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0 or max_seconds <= 0:
            raise ValueError("rotation size and age must be positive")
        self.directory = Path(directory)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.gzip = gzip
        self.clock = clock
        self.finished: list[Path] = []  # rotated-out files, in order
        self._fh: IO[bytes] | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._seq = 0

    @property
    def current(self) -> Path | None:
        """The file being written, if one is open."""
        return self._path

    def write(self, lines: Sequence[bytes], times: Sequence[float] | None = None) -> None:
        """Append records (each one JSON document without its newline); rotate when due.

        Age is measured on ``clock()``, or, when ``times`` is given (one per
        line: `logs export` passes each record's stream time), on the data's
        own time, so exported files cut at the same record boundaries however
        fast the export runs.
        """
        start = 0
        while start < len(lines):
            at = self.clock() if times is None else times[start]
            if self._fh is not None and (
                self._size >= self.max_bytes or at - self._opened_at >= self.max_seconds
            ):
                self.rotate()
            if self._fh is None:
                self._open(at)
            assert self._fh is not None
            end = len(lines)
            if times is not None:
                # Up to the first line that falls past this file's age limit.
                limit = self._opened_at + self.max_seconds
                end = next((i for i in range(start, len(lines)) if times[i] >= limit), end)
                end = max(end, start + 1)
            data = b"".join(line + b"\n" for line in lines[start:end])
            self._fh.write(data)
            self._size += len(data)
            start = end
        if self._fh is not None:
            self._fh.flush()

    def rotate(self) -> None:
        """Close the current file (compressing it if asked); the next write opens a new one."""
        if self._fh is None or self._path is None:
            return
        self._fh.close()
        done = self._path
        if self.gzip:
            done = _compress(self._path)
        self.finished.append(done)
        self._fh = None
        self._path = None

    def close(self) -> None:
        """Finish the current file."""
        self.rotate()

    def _open(self, now: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        while True:
            self._seq += 1
            path = self.directory / f"{self.prefix}-{stamp}-{os.getpid()}-{self._seq:04d}.jsonl"
            if not path.exists() and not path.with_name(path.name + ".gz").exists():
                break
        self._path = path
        self._fh = path.open("ab")
        self._opened_at = now
        self._size = 0


def _compress(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    tmp = target.with_name(target.name + ".tmp")
    with path.open("rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    tmp.replace(target)
    path.unlink()
    return target


def log_files(paths: Iterable[str | Path]) -> list[Path]:
    """The log files named by ``paths``: files as given, directories expanded in name order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.name.endswith((".jsonl", ".jsonl.gz", ".json.gz"))
            )
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise LogReadError(f"{raw}: no such decision log file or directory")
    return out


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of every non-blank line of a log file, plain or gzipped."""
    with _open(path) as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                yield number, line


def decode_line(path: Path, number: int, line: bytes) -> DecisionRecord:
    """One record, or `LogReadError` naming the file and line."""
    try:
        return RECORD_DECODER.decode(line)
    except msgspec.DecodeError as exc:
        raise LogReadError(f"{path}:{number}: not a decision record: {exc}") from None


def read_records(paths: Iterable[str | Path]) -> Iterator[DecisionRecord]:
    """Every record of the files and directories in ``paths``, in order."""
    for path in log_files(paths):
        for number, line in read_lines(path):
            yield decode_line(path, number, line)

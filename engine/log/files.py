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

`split_logs` cuts the files into `Piece`s (byte ranges of their content) so
that worker processes read their own share of a log (`read_piece`) instead
of one process reading every line and handing them out.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec

from arbiter.dsl.errors import ArbiterError
from arbiter.engine.records import RECORD_DECODER, DecisionRecord

__all__ = [
    "LogReadError",
    "Piece",
    "RotatingFiles",
    "log_files",
    "read_lines",
    "read_piece",
    "read_records",
    "split_logs",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_SECONDS = 3600.0
#: Plain files are cut into pieces of about this many bytes (a few thousand records): small
#: enough that two workers finish close together, large enough that a piece's overhead
#: (one task, one report sent back) is nothing next to replaying it.
PIECE_BYTES = 4 * 1024 * 1024


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


def decode_at(path: str | Path, offset: int, line: bytes) -> DecisionRecord:
    """One record read at byte ``offset``; on error `LogReadError` naming the file and line
    (counted only then, so reading by offsets costs nothing while the log is good)."""
    try:
        return RECORD_DECODER.decode(line)
    except msgspec.DecodeError as exc:
        number = line_number(path, offset)
        raise LogReadError(f"{path}:{number}: not a decision record: {exc}") from None


def read_records(paths: Iterable[str | Path]) -> Iterator[DecisionRecord]:
    """Every record of the files and directories in ``paths``, in order."""
    for path in log_files(paths):
        for number, line in read_lines(path):
            yield decode_line(path, number, line)


@dataclass(frozen=True)
class Piece:
    """The lines of one log file that start at a byte offset in ``[start, end)`` of its
    content (uncompressed for ``.gz``); ``end=None``: to the end of the file."""

    path: str
    start: int = 0
    end: int | None = None


def content_size(path: Path) -> int:
    """Bytes of the file's content: its size, or for gzip the size its trailer records.

    The gzip trailer holds the uncompressed size modulo 2**32 (of the last member), so
    it is only a hint: pieces cut from it are still right, only less even.
    """
    size = path.stat().st_size
    if not path.name.endswith(".gz") or size < 18:
        return size
    with path.open("rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return int.from_bytes(fh.read(4), "little")


def split_logs(
    paths: Iterable[str | Path], *, jobs: int = 1, piece_bytes: int = PIECE_BYTES
) -> list[Piece]:
    """The files named by ``paths`` (as `log_files`) cut into pieces, in log order.

    A plain file is cut every ``piece_bytes``. A gzip file cannot be entered in
    the middle (a piece decompresses and drops everything before its start), so
    it is cut only as far as the workers need: into ``ceil(jobs / gzip files)``
    pieces. The last piece of a file always runs to its end.
    """
    files = log_files(paths)
    gzipped = sum(1 for f in files if f.name.endswith(".gz"))
    out: list[Piece] = []
    for f in files:
        size = content_size(f)
        if f.name.endswith(".gz"):
            parts = max(1, min(math.ceil(jobs / gzipped), size // piece_bytes + 1))
        else:
            parts = max(1, math.ceil(size / piece_bytes))
        step = size // parts
        for k in range(parts):
            end = None if k == parts - 1 else (k + 1) * step
            out.append(Piece(str(f), k * step, end))
    return out


def read_piece(piece: Piece) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of every non-blank line that starts inside the piece.

    A line belongs to the piece its first byte falls in: a piece starting inside
    a line skips to the next one, and its last line runs past ``end`` to its
    newline.
    """
    path = Path(piece.path)
    end = math.inf if piece.end is None else piece.end
    with _open(path) as fh:
        at = 0
        if piece.start > 0:
            fh.seek(piece.start - 1)
            # The rest of the line holding byte start-1 (just its newline when the piece
            # starts on a line): it belongs to the piece before.
            at = piece.start - 1 + len(fh.readline())
        for line in fh:
            if at >= end:
                return
            if line.strip():
                yield at, line
            at += len(line)


def line_number(path: str | Path, offset: int) -> int:
    """The 1-based number of the line starting at byte ``offset`` of a log file's content."""
    count = 1
    with _open(Path(path)) as fh:
        left = offset
        while left > 0:
            block = fh.read(min(left, 1 << 20))
            if not block:
                break
            count += block.count(b"\n")
            left -= len(block)
    return count

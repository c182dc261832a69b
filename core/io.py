"""Files that are never half-written: atomic replacement, flushed JSONL, line-numbered reading.

Long jobs (ingest, indexing, fine-tuning, batch runs) write JSONL incrementally through
:class:`JsonlAppender` so that a job killed at any moment leaves only complete lines, and
finished outputs are published with :func:`atomic_write_text` / ``os.replace`` so a re-run never
leaves a mix of old and new files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from core.errors import UserError

log = logging.getLogger(__name__)


class InputError(UserError, ValueError):
    """Bad input that the user must fix; the message names the file and line/page."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dumps(obj: Any) -> str:
    """One JSON line, UTF-8 characters kept readable (orjson: ~10x faster than json)."""
    try:
        return orjson.dumps(obj).decode("utf-8")
    except TypeError:  # types orjson does not know (e.g. Path): fall back to str()
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temporary file beside ``path`` and rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        kwargs = {"encoding": encoding} if "b" not in mode else {}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_writer(path) as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    with atomic_writer(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=indent)
        fh.write("\n")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write all records atomically; returns the count."""
    n = 0
    with atomic_writer(path) as fh:
        for rec in records:
            fh.write(dumps(rec) + "\n")
            n += 1
    return n


@dataclass
class BadLine:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def iter_jsonl(
    path: str | Path,
    on_error: Callable[[BadLine], None] | None = None,
    require_object: bool = True,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)``; bad lines are passed to ``on_error`` and skipped.

    Blank lines are ignored. Without ``on_error`` a bad line raises :class:`InputError` naming
    the file and line. Invalid UTF-8 is a bad line, not a crash of the whole read.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
                rec = json.loads(text)
                if require_object and not isinstance(rec, dict):
                    raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
            except UnicodeDecodeError as exc:
                bad = BadLine(str(path), lineno, f"invalid UTF-8 at byte {exc.start}")
            except ValueError as exc:
                bad = BadLine(str(path), lineno, f"invalid JSON: {exc}")
            else:
                yield lineno, rec
                continue
            if on_error is None:
                raise InputError(str(bad))
            on_error(bad)


def read_jsonl(path: str | Path, on_error: Callable[[BadLine], None] | None = None) -> list[dict]:
    return [rec for _, rec in iter_jsonl(path, on_error=on_error)]


def repair_jsonl_tail(path: str | Path) -> int:
    """Cut a trailing partial line left by a killed writer; returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        # Walk back from the end to the last newline.
        pos = size
        chunk = 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            block = fh.read(pos - start)
            idx = block.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        else:
            keep = 0
        if keep < size:
            fh.truncate(keep)
            log.warning("%s: removed a partial last line (%d bytes) left by an interrupted run",
                        path, size - keep)
        return size - keep


class JsonlAppender:
    """Append JSON lines, each flushed as soon as it is written (resumable outputs).

    With ``flush_each_line=False`` the caller flushes (``sync()``) at its own checkpoints,
    which is much cheaper for hundreds of thousands of small lines.
    """

    def __init__(self, path: str | Path, fsync_every: int = 0, flush_each_line: bool = True):
        self.path = Path(path)
        self._flush_each_line = flush_each_line
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the object)
        self._fsync_every = fsync_every
        self._since_sync = 0
        self.written = 0

    def write(self, record: dict) -> None:
        self.write_line(dumps(record))

    def write_text(self, text: str) -> None:
        """Append several complete lines at once (``text`` ends with a newline)."""
        self._fh.write(text)
        if self._flush_each_line:
            self._fh.flush()
        self.written += text.count("\n")

    def write_line(self, line: str) -> None:
        """Append one already-serialised JSON line (no newline inside)."""
        self._fh.write(line + "\n")
        if self._flush_each_line:
            self._fh.flush()
        self.written += 1
        if self._fsync_every:
            self._since_sync += 1
            if self._since_sync >= self._fsync_every:
                os.fsync(self._fh.fileno())
                self._since_sync = 0

    def sync(self) -> None:
        """Flush to disk: lines written so far survive a crash of the machine too."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()

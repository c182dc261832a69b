"""Chunk texts read from disk on demand, behind LangChain's ``Docstore`` interface.

LangChain's FAISS store asks its docstore for a ``Document`` by id and maps FAISS positions to
ids with ``index_to_docstore_id``. Its in-memory docstore holds every chunk as a ``Document``
and the map as a dict: ~2 KB of Python objects a chunk, ~10 GB at ptwiki's ~5 M chunks.

Here the chunk list stays in ``chunks.jsonl``; ``chunks.offsets.npy`` holds the byte offset of
every line (n + 1 int64, memory-mapped), so chunk *i* is one ``pread`` and one ``json.loads``
away and loading costs 8 bytes a chunk of address space, not a Python object. The docstore id of
a chunk is its position (as a string), so ``index_to_docstore_id`` is computed, not stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from langchain_community.docstore.base import Docstore
from langchain_core.documents import Document

from rag.chunking import Chunk

OFFSETS = "chunks.offsets.npy"
_READ = 1 << 20


def line_offsets(path: str | Path) -> np.ndarray:
    """Byte offsets of the start of every line of ``path``, plus the file's size (n + 1)."""
    starts = [np.zeros(1, dtype=np.int64)]
    base = 0
    with open(path, "rb") as fh:
        while block := fh.read(_READ):
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 0x0A)
            starts.append(ends.astype(np.int64) + base + 1)
            base += len(block)
    offsets = np.concatenate(starts)
    if offsets[-1] != base:  # no newline after the last line
        offsets = np.append(offsets, base)
    return offsets


def write_offsets(chunks_file: str | Path, out: str | Path) -> int:
    """Write the offsets array of ``chunks_file`` to ``out`` (.npy); returns the chunk count."""
    offsets = line_offsets(chunks_file)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, offsets, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)  # a killed build never leaves a torn offsets file
    return len(offsets) - 1


class ChunkFile(Sequence[Chunk]):
    """The chunks of ``chunks.jsonl`` as a read-only sequence; nothing is parsed until asked.

    ``offsets`` is the array written by :func:`write_offsets` (memory-mapped from the index
    folder) or None to scan the file once (an index from before the offsets file existed).
    """

    def __init__(self, path: str | Path, offsets: str | Path | np.ndarray | None = None):
        self.path = Path(path)
        if offsets is None:
            offsets = line_offsets(self.path)
        elif not isinstance(offsets, np.ndarray):
            offsets = np.load(offsets, mmap_mode="r", allow_pickle=False)
        self._offsets = offsets
        size = self.path.stat().st_size
        if offsets.ndim != 1 or len(offsets) < 1 or int(offsets[-1]) != size:
            raise ValueError(f"{self.path}: the offsets do not match the file ({size} bytes)")
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._lock = threading.Lock()  # for systems without os.pread (Windows)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def text_of(self, i: int) -> str:
        return self.record(i)["text"]

    def record(self, i: int) -> dict:
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        if hasattr(os, "pread"):  # one call, no shared file position: safe across threads
            line = os.pread(self._fd, end - start, start)
        else:
            with self._lock:
                os.lseek(self._fd, start, os.SEEK_SET)
                line = os.read(self._fd, end - start)
        try:
            return json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{self.path}: line {i + 1} is not a chunk record ({exc})") from None

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"chunk {i} out of range ({n} chunks)")
        return Chunk.from_record(self.record(i % n))

    def __iter__(self) -> Iterator[Chunk]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        with contextlib.suppress(OSError, AttributeError):
            self.close()


class PositionIds(Mapping[int, str]):
    """``index_to_docstore_id`` for a docstore keyed by position: i -> str(i), nothing stored."""

    def __init__(self, n: int):
        self.n = n

    def __getitem__(self, i: int) -> str:
        i = int(i)
        if not 0 <= i < self.n:
            raise KeyError(i)
        return str(i)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


class ChunkDocstore(Docstore):
    """LangChain ``Docstore`` over a sequence of chunks (a :class:`ChunkFile`, or a list):
    ``search("17")`` builds the ``Document`` of chunk 17 when it is asked for, with the chunk's
    metadata plus its ``position``."""

    def __init__(self, chunks: Sequence[Chunk]):
        self.chunks = chunks

    def search(self, search: str) -> Document | str:
        try:
            pos = int(search)
            if pos < 0:
                raise IndexError
            c = self.chunks[pos]
        except (ValueError, IndexError):
            return f"ID {search} not found."
        return Document(id=c.id, page_content=c.text, metadata={**c.metadata(), "position": pos})

    def add(self, texts: dict[str, Document]) -> None:
        raise NotImplementedError("an index's chunks are written by `compara index`")

    def delete(self, ids: list) -> None:
        raise NotImplementedError("an index's chunks are written by `compara index`")

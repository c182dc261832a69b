"""Sets that grow with the dump, held in a few bytes per entry instead of Python objects.

An ingest of the whole ptwiki dump writes ~1 M articles × ~100-150 instruction records, each
deduplicated against all the records before it by its 64-bit id. A Python ``set`` of those
ints costs ~60-90 bytes a key (the int object and the hash table's slot): ~10 GB at 130 M
keys. :class:`KeySet` keeps them as sorted ``uint64`` runs (8 bytes a key) plus a small Python
set of the newest keys; :class:`RedirectIndex` finds the redirects to a title from a sorted
array of 8-byte title hashes and the line offsets in ``redirects.jsonl`` (16 bytes a redirect)
instead of a dict of every redirect's title.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson


class KeySet:
    """A set of 64-bit unsigned ints: ``in``, ``add``, ``|=`` and ``isdisjoint`` as a set has.

    New keys go to a Python set; when it holds ``buffer`` keys they are sorted into a numpy
    run. Runs of similar size are merged (fewer runs to search), up to ``max_run`` keys, so a
    merge never needs more than ~2 × ``max_run`` × 8 bytes on top of the keys. A lookup of an
    article's keys is one ``searchsorted`` per run."""

    def __init__(self, keys: Iterable[int] = (), buffer: int = 1 << 20, max_run: int = 1 << 24):
        if buffer < 1 or max_run < buffer:
            raise ValueError("KeySet needs 1 <= buffer <= max_run")
        self._buffer = buffer
        self._max_run = max_run
        self._new: set[int] = set()
        self._runs: list[np.ndarray] = []
        self._size = 0
        self |= set(keys)

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: int) -> bool:
        if key in self._new:
            return True
        k = np.uint64(key)
        for run in self._runs:
            i = int(np.searchsorted(run, k))
            if i < run.size and run[i] == k:
                return True
        return False

    def isdisjoint(self, keys: set[int]) -> bool:
        if not self._new.isdisjoint(keys):
            return False
        if not self._runs or not keys:
            return True
        arr = np.fromiter(keys, dtype=np.uint64, count=len(keys))
        for run in self._runs:
            idx = np.searchsorted(run, arr)
            np.minimum(idx, run.size - 1, out=idx)
            if (run[idx] == arr).any():
                return False
        return True

    def _in_runs(self, keys: list[int]) -> list[bool] | None:
        """For each key, whether a sorted run holds it (None when there is no run yet)."""
        if not self._runs or not keys:
            return None
        arr = np.fromiter(keys, dtype=np.uint64, count=len(keys))
        found = np.zeros(arr.size, dtype=bool)
        for run in self._runs:
            idx = np.searchsorted(run, arr)
            np.minimum(idx, run.size - 1, out=idx)
            found |= run[idx] == arr
        return found.tolist()

    def add_new(self, keys: list[int]) -> list[bool]:
        """Add ``keys`` in order; for each, whether it was new (in neither the set nor earlier in
        ``keys``). One vectorised lookup per run for all of them, instead of one per key."""
        in_runs = self._in_runs(keys)
        known = self._new
        fresh: set[int] = set()
        out = []
        for i, key in enumerate(keys):
            new = key not in known and key not in fresh and not (in_runs and in_runs[i])
            if new:
                fresh.add(key)
            out.append(new)
        self.add_disjoint(fresh)
        return out

    def add(self, key: int) -> None:
        if key not in self:
            self._new.add(key)
            self._size += 1
            if len(self._new) >= self._buffer:
                self._flush()

    def __ior__(self, keys: set[int]) -> KeySet:  # type: ignore[misc]
        """Add ``keys`` (any already in the set are not counted twice)."""
        if self._runs and not self.isdisjoint(keys):
            for key in keys:
                self.add(key)
            return self
        self.add_disjoint(keys)
        return self

    def add_disjoint(self, keys: set[int]) -> None:
        """Add ``keys`` that :meth:`isdisjoint` has just found new (not checked again)."""
        before = len(self._new)
        self._new |= keys
        self._size += len(self._new) - before
        if len(self._new) >= self._buffer:
            self._flush()

    def _flush(self) -> None:
        run = np.fromiter(self._new, dtype=np.uint64, count=len(self._new))
        run.sort()
        self._new = set()
        self._runs.append(run)
        # Merge the newest runs while the one before is not much larger (logarithmic count).
        while (len(self._runs) >= 2 and self._runs[-2].size <= 2 * self._runs[-1].size
               and self._runs[-2].size + self._runs[-1].size <= self._max_run):
            b = self._runs.pop()
            a = self._runs.pop()
            merged = np.concatenate((a, b))
            del a, b
            merged.sort(kind="stable")  # two sorted halves: a merge pass
            self._runs.append(merged)

    @property
    def nbytes(self) -> int:
        """Bytes held by the sorted runs (the Python set of new keys aside)."""
        return sum(run.nbytes for run in self._runs)


def title_hash(title: str) -> int:
    return int.from_bytes(hashlib.blake2b(title.encode("utf-8"), digest_size=8).digest(), "little")


class RedirectIndex:
    """The redirects of ``redirects.jsonl`` by target title, in 16 bytes a redirect.

    ``aliases(title)`` gives the titles of the redirects to ``title`` in file order (each line
    it finds is read back and its target compared with ``title``: a hash collision never
    attaches a wrong alias)."""

    def __init__(self, path: Path):
        self._path = path
        hashes: list[int] = []
        offsets: list[int] = []
        offset = 0
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    try:
                        target = orjson.loads(line)["target"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        target = None
                    if isinstance(target, str):
                        hashes.append(title_hash(target))
                        offsets.append(offset)
                offset += len(line)
        h = np.array(hashes, dtype=np.uint64)
        o = np.array(offsets, dtype=np.int64)
        del hashes, offsets
        order = np.argsort(h, kind="stable")  # stable: a target's redirects stay in file order
        self._hashes = h[order]
        self._offsets = o[order]
        self.targets = int(np.unique(self._hashes).size)  # distinct target titles
        self._fh = open(path, "rb")  # noqa: SIM115 (closed by close())

    def __len__(self) -> int:
        return int(self._hashes.size)

    def aliases(self, title: str) -> list[str]:
        if not self._hashes.size:
            return []
        k = np.uint64(title_hash(title))
        lo = int(np.searchsorted(self._hashes, k, side="left"))
        if lo >= self._hashes.size or self._hashes[lo] != k:
            return []
        hi = int(np.searchsorted(self._hashes, k, side="right"))
        out = []
        for offset in self._offsets[lo:hi]:
            self._fh.seek(int(offset))
            rec = orjson.loads(self._fh.readline())
            if rec["target"] == title:
                out.append(rec["title"])
        return out

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RedirectIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

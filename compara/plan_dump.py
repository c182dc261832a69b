"""Reading a sample of a dump for `compara plan`: the first pages written as a small dump to
ingest, and pages, articles' pages and XML bytes counted over the dump's first bytes, with the
share of the (compressed) file they took."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COUNT_BYTES = 16 << 20  # pages of a dump's sample are counted over its first 16 MB (~3 s)


class _Counting:
    """A raw file that counts the bytes read from it (how much of the dump a sample took)."""

    def __init__(self, fh):
        self.fh, self.count = fh, 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def sample_dump(dump: Path, pages: int, dest: Path,
                count_bytes: int | None = None) -> dict[str, Any]:
    """Write the first ``pages`` pages of ``dump`` as a small XML dump at ``dest``, then go on
    counting (without writing) until ``count_bytes`` of the dump's (compressed) bytes are read:
    pages, content pages (namespace 0, not redirects) and XML bytes, for the written part and
    for all that was read. Returns both tallies, the share of the dump's bytes read and whether
    the whole dump was written. Counting over many compressed blocks keeps the share exact to a
    few percent: a compressed reader runs ahead by up to a block (900 kB of bz2), which alone
    would dwarf a small sample's bytes. The decompressor is chosen as the ingest chooses it
    (:func:`ingest.dump.open_dump`: by the file's first bytes, not its name)."""
    from ingest.dump import open_dump

    count_bytes = count_bytes or COUNT_BYTES
    raw = _Counting(open(dump, "rb"))  # noqa: SIM115 - closed below
    tally = {"pages": 0, "content": 0, "bytes": 0}
    ns0 = redirect = False

    def count(line: bytes) -> bool:
        nonlocal ns0, redirect
        tally["bytes"] += len(line)
        if b"<ns>" in line:
            ns0 = b"<ns>0</ns>" in line
        elif b"<redirect" in line:
            redirect = True
        elif b"</page>" in line:
            tally["pages"] += 1
            tally["content"] += ns0 and not redirect
            ns0 = redirect = False
            return True
        return False

    try:
        stream = open_dump(dump, raw=raw)
        whole = True
        with open(dest, "wb") as out:
            lines = _lines(stream)
            for line in lines:
                out.write(line)
                if count(line) and tally["pages"] >= pages:
                    whole = False
                    break
            if not whole:
                out.write(b"</mediawiki>\n")
        written = dict(tally)
        ended = whole
        if not whole:
            ended = True
            for line in lines:
                count(line)
                if raw.count >= count_bytes:
                    ended = False
                    break
        size = dump.stat().st_size
        share = 1.0 if ended else min(0.999, raw.count / size) if size else 1.0
        return {"pages": written["pages"], "written": written, "counted": dict(tally),
                "share": share, "whole": whole}
    finally:
        raw.fh.close()


def _lines(stream):
    buf = b""
    while True:
        chunk = stream.read(1 << 13)  # small reads: the bytes counted stay close to the pages
        if not chunk:
            if buf:
                yield buf
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line + b"\n"


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))

"""Stream pages out of a MediaWiki XML dump (.xml, .xml.bz2, multistream .bz2) with mwxml.

Memory stays constant whatever the dump size. Damaged input does not end the run early when it
can be helped:

* invalid UTF-8 bytes are replaced (U+FFFD) before the XML parser sees them, and the pages that
  held them are reported;
* malformed XML is reported with the line, column and byte offset and the title of the page it
  broke; reading resumes at the next ``<page>``;
* a truncated compressed file ends the read: everything before the damage is kept, and the
  problem is reported.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree.ElementTree import ParseError

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 20
_KEEP_TAIL = 8 << 20  # bytes of recent input kept to find where to resume after an XML error
_PAGE_OPEN = re.compile(rb"<page>")
_TITLE = re.compile(rb"<title>([^<]{0,512})</title>")
_ID = re.compile(rb"<id>(\d+)</id>")


@dataclass
class RawPage:
    id: int
    namespace: int
    title: str
    redirect: str | None
    revision_id: int | None
    timestamp: str | None
    text: str | None


@dataclass
class DumpProblem:
    """Something wrong in the dump; ``fatal`` problems end the read."""

    kind: str  # "encoding", "xml", "truncated", "io"
    message: str
    fatal: bool = False
    page_title: str | None = None
    page_id: int | None = None
    line: int | None = None
    column: int | None = None
    byte_offset: int | None = None

    def describe(self, path: str | Path) -> str:
        where = []
        if self.page_title is not None or self.page_id is not None:
            where.append(f"page {self.page_title!r} (id {self.page_id})")
        if self.line is not None:
            where.append(f"line {self.line}, column {self.column}")
        if self.byte_offset is not None:
            where.append(f"byte {self.byte_offset:,} of the decompressed XML")
        return f"{path}: {self.message}" + (f" [{'; '.join(where)}]" if where else "")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def open_dump(path: str | Path, raw: io.RawIOBase | None = None) -> io.BufferedIOBase:
    """The decompressed byte stream of a dump (bz2 incl. multistream, gzip, or plain XML).

    ``raw``: an open binary file of ``path`` to read the compressed bytes through (the plan
    counts how many a sample of pages took)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dump not found: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(3)
    source = path if raw is None else raw
    if magic == b"BZh":
        return bz2.open(source, "rb")  # reads every stream of a multistream file
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(source, "rb")
    return open(path, "rb") if raw is None else raw


class _CleanStream(io.RawIOBase):
    """Bytes handed to the XML parser: invalid UTF-8 replaced, positions tracked.

    Every position (``tail_start``, line numbers) counts bytes of this cleaned stream. A tail of
    recent output is kept so that, after an XML error, reading can resume at the next
    ``<page>`` after the error without losing what the dead parser had buffered.
    """

    def __init__(self, raw: io.BufferedIOBase):
        self.raw = raw
        self.offset = 0  # compressed-side: decompressed bytes consumed from raw
        self.bad_bytes: list[int] = []  # offsets (in raw) of invalid UTF-8 sequences
        self.tail = bytearray()
        self.tail_start = 0
        self.lines_before_tail = 0
        self.truncated: str | None = None
        self.pending = b""  # produced (or synthetic) bytes not yet handed to the parser
        self._pos = 0
        self._carry = b""  # an incomplete UTF-8 sequence at the end of the last chunk

    def readable(self) -> bool:
        return True

    def _decode(self, data: bytes, final: bool) -> bytes:
        """Valid UTF-8 of ``data`` (plus any carried partial sequence), bad bytes replaced."""
        buf = self._carry + data if self._carry else data
        base = self.offset - len(buf)
        self._carry = b""
        try:
            buf.decode("utf-8")
            return buf
        except UnicodeDecodeError:
            pass
        out = bytearray()
        pos = 0
        while pos < len(buf):
            try:
                buf[pos:].decode("utf-8")
                out += buf[pos:]
                break
            except UnicodeDecodeError as exc:
                good_end = pos + exc.start
                out += buf[pos:good_end]
                if not final and exc.reason == "unexpected end of data" and exc.end + pos == len(buf):
                    self._carry = bytes(buf[good_end:])
                    break
                out += "\ufffd".encode()
                self.bad_bytes.append(base + good_end)
                pos = pos + exc.end
        return bytes(out)

    def _start_reader(self) -> None:
        """Decompress in a background thread: bz2/gzip release the GIL, so decompression
        overlaps with XML parsing instead of adding to it."""
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._stop = threading.Event()

        def put(item) -> bool:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                while not self._stop.is_set():
                    data = self.raw.read1(_READ_SIZE)
                    if not put(data) or not data:
                        return
            except BaseException as exc:  # EOFError/OSError: truncated; others: surfaced
                put(exc)

        self._thread = threading.Thread(target=work, name="dump-decompress", daemon=True)
        self._thread.start()

    def _next_raw(self) -> bytes:
        if not hasattr(self, "_queue"):
            self._start_reader()
        item = self._queue.get()
        if isinstance(item, (EOFError, OSError)):
            raise item
        if isinstance(item, BaseException):
            raise item
        if not item:
            self._queue.put(item)  # stay at end of stream for later calls
        return item

    def produce(self) -> bytes:
        """Read and clean the next chunk from the compressed side; remember it."""
        if self.truncated is not None:
            return b""
        try:
            data = self._next_raw()
        except (EOFError, OSError) as exc:
            self.truncated = str(exc) or type(exc).__name__
            data = b""
        self.offset += len(data)
        out = self._decode(data, final=not data)
        if out:
            self._remember(out)
        return out

    def readinto(self, b) -> int:
        if self._pos >= len(self.pending):
            self.pending, self._pos = self.produce(), 0
            if not self.pending:
                return 0
        n = min(len(b), len(self.pending) - self._pos)
        b[:n] = self.pending[self._pos:self._pos + n]
        self._pos += n
        return n

    def stop(self) -> None:
        """End the decompression thread (reading finished or was abandoned)."""
        if hasattr(self, "_stop"):
            self._stop.set()
            self._thread.join(timeout=5)

    def restart_with(self, data: bytes) -> None:
        self.pending, self._pos = data, 0

    def _remember(self, data: bytes) -> None:
        self.tail += data
        if len(self.tail) > _KEEP_TAIL:
            cut = len(self.tail) - _KEEP_TAIL
            self.lines_before_tail += self.tail.count(b"\n", 0, cut)
            del self.tail[:cut]
            self.tail_start += cut


class DumpReader:
    """Iterate over the pages of a dump; problems go to ``on_problem``."""

    def __init__(self, path: str | Path, on_problem: Callable[[DumpProblem], None] | None = None):
        self.path = Path(path)
        self.on_problem = on_problem or (lambda p: log.warning(p.describe(self.path)))
        self.namespaces: dict[int, str] = {}
        self.site_name: str | None = None
        self.db_name: str | None = None
        self.bytes_read = 0

    def __iter__(self) -> Iterator[RawPage]:
        from mwxml.errors import MalformedXML

        raw = open_dump(self.path)
        stream = _CleanStream(raw)
        header: bytes | None = None
        line_base = 0  # absolute line of the first line of the current parser's input
        prefix_lines = 0
        last: tuple[str | None, int | None] = (None, None)
        bad_seen = 0
        try:
            while True:
                reader = io.BufferedReader(stream, buffer_size=1 << 16)
                try:
                    for page in self._pages(reader, header is None):
                        text = page.text
                        if header is None:
                            header = self._header_bytes(stream)
                        last = (page.title, page.id)
                        if len(stream.bad_bytes) > bad_seen and (
                                "\ufffd" in (text or "") or "\ufffd" in (page.title or "")):
                            # The parser reads ahead, so the page that holds the replaced bytes
                            # is the one whose text shows them, not the one being read when
                            # they were decoded.
                            count = (text or "").count("\ufffd") + (page.title or "").count("\ufffd")
                            offsets = stream.bad_bytes[bad_seen:bad_seen + count]
                            bad_seen = min(len(stream.bad_bytes), bad_seen + count)
                            self.on_problem(DumpProblem(
                                "encoding",
                                f"invalid UTF-8 ({count} byte sequence(s)) replaced by U+FFFD",
                                page_title=page.title, page_id=page.id,
                                byte_offset=offsets[0] if offsets else None))
                        self.bytes_read = stream.offset
                        yield page
                    break
                except (ParseError, MalformedXML) as exc:
                    if stream.truncated is not None:
                        break  # reported below: the cause is the truncation, not the XML
                    line, column = exc.position if hasattr(exc, "position") else (None, None)
                    abs_line = (line - prefix_lines + line_base) if line is not None else None
                    resume = self._resume_point(stream, abs_line)
                    title, page_id = self._page_at(stream, abs_line, last)
                    problem = DumpProblem(
                        "xml", f"malformed XML: {exc.msg if hasattr(exc, 'msg') else exc}",
                        fatal=resume is None, page_title=title, page_id=page_id,
                        line=abs_line, column=column,
                        byte_offset=self._offset_of_line(stream, abs_line))
                    self.on_problem(problem)
                    if resume is None or header is None:
                        return
                    # Restart a parser on: the dump's header + the input from the next <page>.
                    rest = bytes(stream.tail[resume - stream.tail_start:])
                    line_base = 1 + stream.lines_before_tail + stream.tail.count(
                        b"\n", 0, resume - stream.tail_start)
                    prefix_lines = header.count(b"\n") + 1
                    stream.restart_with(header + rest)
        finally:
            if len(stream.bad_bytes) > bad_seen:
                self.on_problem(DumpProblem(
                    "encoding", f"invalid UTF-8 ({len(stream.bad_bytes) - bad_seen} byte "
                    "sequence(s)) outside page text replaced by U+FFFD",
                    byte_offset=stream.bad_bytes[bad_seen]))
            if stream.truncated is not None:
                self.on_problem(DumpProblem(
                    "truncated",
                    f"the compressed file ends early ({stream.truncated}); pages after the "
                    f"damage are missing", fatal=True,
                    page_title=last[0], page_id=last[1], byte_offset=stream.offset))
            self.bytes_read = stream.offset
            stream.stop()
            raw.close()

    # -- reading ----------------------------------------------------------------------------
    def _pages(self, reader: io.BufferedReader, first: bool) -> Iterator[RawPage]:
        """Pages in dump order, read with mwxml's streaming element iterator.

        mwxml's own ``Page``/``Revision`` objects parse every field of every revision
        (timestamps, contributors, comments, hashes) into typed objects: two thirds of the
        reading time, for fields an ingest never uses. Here each page keeps only its title,
        namespace, id, redirect target, and its last revision's id, timestamp and text; the
        other elements are skipped by the same iterator, so memory stays constant.
        """
        from mwxml.element_iterator import ElementIterator
        from mwxml.errors import MalformedXML
        from mwxml.iteration.site_info import SiteInfo

        root = ElementIterator.from_file(reader)
        namespace_map = None
        for element in root:
            tag = element.tag
            if tag == "page":
                yield self._page(element, namespace_map)
            elif tag == "siteinfo":
                info = SiteInfo.from_element(element)
                namespace_map = {ns.name: ns for ns in info.namespaces or []}
                if first:
                    self._read_siteinfo(info)
            elif tag != "logitem":
                raise MalformedXML(f"Unexpected tag found when processing a <mediawiki>: '{tag}'")

    @staticmethod
    def _page(element, namespace_map) -> RawPage:
        title = namespace = page_id = redirect = None
        revision_id = timestamp = text = None
        for sub in element:
            tag = sub.tag
            if tag == "revision":
                revision_id = timestamp = text = None
                for field in sub:
                    ftag = field.tag
                    if ftag == "text":
                        text = field.text or None
                    elif ftag == "id":
                        revision_id = int(field.text)
                    elif ftag == "timestamp":
                        timestamp = (field.text or "").strip() or None
            elif tag == "title":
                title = sub.text
            elif tag == "ns":
                namespace = int(sub.text)
            elif tag == "id":
                page_id = int(sub.text)
            elif tag == "redirect":
                redirect = sub.attr("title")
        title = (title or "").replace("_", " ")
        if namespace is None:  # old dumps: no <ns>, the namespace is the title's prefix
            from mwxml.iteration.page import extract_namespace

            namespace = extract_namespace(title, namespace_map)[0]
        return RawPage(id=page_id, namespace=namespace, title=title, redirect=redirect,
                       revision_id=revision_id, timestamp=timestamp, text=text)

    # -- helpers ----------------------------------------------------------------------------
    def _read_siteinfo(self, info) -> None:
        self.site_name = info.name
        self.db_name = info.dbname
        for ns in info.namespaces or []:
            self.namespaces[ns.id] = ns.name or ""

    @staticmethod
    def _header_bytes(stream: _CleanStream) -> bytes:
        """Everything before the first <page>: the root element and siteinfo."""
        m = _PAGE_OPEN.search(stream.tail)
        return bytes(stream.tail[: m.start()]) if m else bytes(stream.tail)

    @staticmethod
    def _offset_of_line(stream: _CleanStream, line: int | None) -> int | None:
        if line is None:
            return None
        want = line - 1 - stream.lines_before_tail
        if want < 0:
            return None
        pos = 0
        for _ in range(want):
            nxt = stream.tail.find(b"\n", pos)
            if nxt < 0:
                return None
            pos = nxt + 1
        return stream.tail_start + pos

    def _resume_point(self, stream: _CleanStream, line: int | None) -> int | None:
        start = self._offset_of_line(stream, line)
        if start is None:
            return None
        rel = start - stream.tail_start
        # Make sure the whole rest of the stream up to the next <page> is in the tail.
        m = _PAGE_OPEN.search(stream.tail, rel + 1)
        while m is None and stream.truncated is None:
            if not stream.produce():
                break
            rel = start - stream.tail_start
            m = _PAGE_OPEN.search(stream.tail, max(rel + 1, 0))
        return stream.tail_start + m.start() if m else None

    def _page_at(self, stream: _CleanStream, line: int | None,
                 last: tuple[str | None, int | None]) -> tuple[str | None, int | None]:
        """Title and id of the page the error is in (the last <page> opened before it)."""
        end = self._offset_of_line(stream, line)
        if end is None:
            return last
        rel = end - stream.tail_start
        opened = [m.start() for m in _PAGE_OPEN.finditer(stream.tail, 0, rel + 1)]
        if not opened:
            return last
        chunk = bytes(stream.tail[opened[-1]:rel + 4096])
        t = _TITLE.search(chunk)
        i = _ID.search(chunk)
        title = t.group(1).decode("utf-8", "replace") if t else None
        return title, int(i.group(1)) if i else None

"""`compara ingest`: dump -> articles.jsonl, redirects.jsonl, instructions.{train,val}.jsonl.

The run writes into ``OUT/.ingest-partial/`` line by line (each line flushed) and records how
far it got in ``state.json``; only when the dump has been read does it attach redirect aliases,
derive the instruction set and move the finished files into ``OUT``. A killed run leaves the
previous outputs untouched, and ``--resume`` continues from the last saved page.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import re
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from core.errors import UserError
from core.io import (
    InputError,
    JsonlAppender,
    atomic_write_json,
    atomic_writer,
    dumps,
    iter_jsonl,
    repair_jsonl_tail,
)
from core.versions import library_versions
from ingest.config import IngestConfig
from ingest.dump import DumpProblem, DumpReader, RawPage
from ingest.keyset import KeySet, RedirectIndex
from ingest.namespaces import CATEGORY_NS, normalize_title, redirect_target

log = logging.getLogger(__name__)

PARTIAL = ".ingest-partial"
OUTPUTS = ("articles.jsonl", "redirects.jsonl", "instructions.train.jsonl",
           "instructions.val.jsonl", "ingest_report.json")
_STATE_EVERY_S = 5.0


class IngestFailed(UserError, RuntimeError):
    """The dump could not be read to its end; ``report`` says what was kept."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


@dataclass
class PageResult:
    kind: str  # "article", "redirect", "skipped"
    reason: str | None = None
    article_line: bytes | None = None  # the article as a JSON line, UTF-8 (aliases filled in at the end)
    instructions: InstructionBatch | None = None
    redirect: dict[str, Any] | None = None
    leftover_markup: int = 0
    dropped_templates: Counter | None = None
    warning: str | None = None
    category_page: dict[str, Any] | None = None  # ingest.select with category_depth: its parents


def article_url(base_url: str, title: str) -> str:
    return base_url + quote(title.replace(" ", "_"), safe="()_,:'!-./*;@$")


@dataclass
class InstructionBatch:
    """One article's instruction records, ready to write: the lines of each split joined, and
    per record (key, split, task, output chars) in the order of those lines.

    The lines are UTF-8 bytes, as orjson writes them: a worker hands them to the writer without
    decoding them to str and pickling them back to UTF-8 (the writer decodes them once)."""

    keys: list[int]
    joined: dict[str, bytes]
    rows: list[tuple[int, str, str, int]]
    coverage: dict[str, Any] | None = None  # ingest.instructions.sentence_coverage of the article


def _instruction_lines(records: list[dict[str, Any]], cfg: IngestConfig,
                       splits: list[str] | None = None,
                       coverage: dict[str, Any] | None = None) -> InstructionBatch:
    from ingest.instructions import dedup_key, splits_of

    icfg = cfg.instructions
    if splits is None:
        splits = splits_of([r["id"] for r in records], icfg.val_fraction, icfg.split_salt)
    dump, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    rows = []
    lines: dict[str, list[bytes]] = {"train": [], "val": []}
    for r, split in zip(records, splits, strict=True):
        rows.append((dedup_key(r), split, r["task"], len(r["output"])))
        lines[split].append(dump(r, option=newline))
    return InstructionBatch([row[0] for row in rows],
                            {split: b"".join(parts) for split, parts in lines.items()}, rows, coverage)


def process_page(page: RawPage, cfg: IngestConfig) -> PageResult:
    """Classify and clean one page, and derive its instructions (runs in worker processes)."""
    from ingest.instructions import article_records
    from ingest.wikitext import parse_wikitext

    text = page.text
    target = normalize_title(page.redirect) if page.redirect else redirect_target(text or "")
    if target:
        return PageResult("redirect", redirect={"title": page.title, "target": target,
                                                "id": page.id, "namespace": page.namespace})
    if page.namespace not in cfg.namespaces:
        if page.namespace == CATEGORY_NS and cfg.select.category_depth:
            from ingest.select import category_page

            return PageResult("skipped", "namespace",
                              category_page=category_page(page.title, text or ""))
        return PageResult("skipped", "namespace")
    if text is None or not text.strip():
        return PageResult("skipped", "empty", warning=f"page {page.title!r} (id {page.id}) has no text")
    size = len(text.encode("utf-8"))
    if size > cfg.max_page_bytes:
        return PageResult("skipped", "too_large", warning=(
            f"page {page.title!r} (id {page.id}) has {size:,} bytes of wikitext, over "
            f"ingest.max_page_bytes={cfg.max_page_bytes:,}: skipped"))
    try:
        parsed = parse_wikitext(text, page.title, tables=cfg.tables)
    except Exception as exc:  # a cleaner bug must not end a run over millions of pages
        return PageResult("skipped", "clean_error",
                          warning=f"page {page.title!r} (id {page.id}): cleaning failed: {exc!r}")
    if parsed.is_disambiguation and cfg.skip_disambiguation:
        return PageResult("skipped", "disambiguation")
    body = parsed.text
    if len(body) < cfg.min_article_chars:
        return PageResult("skipped", "stub")
    article = {
        "id": page.id,
        "title": page.title,
        "url": article_url(cfg.base_url, page.title),
        "revision_id": page.revision_id,
        "timestamp": page.timestamp,
        "sections": [{"heading": s.heading, "level": s.level, "text": s.text}
                     for s in parsed.sections],
        "text": body,
        "infobox_type": parsed.infobox_type,
        "infobox": parsed.infobox,
        "categories": parsed.categories,
        "aliases": [],
    }
    if cfg.select.active:
        # The selection is made once the whole dump is read; the instructions of the selected
        # articles are derived then (_select_and_derive).
        if cfg.select.neighbours:
            from ingest.select import LINKS_FIELD

            article[LINKS_FIELD] = parsed.links
        return PageResult("article", article_line=orjson.dumps(article, option=orjson.OPT_APPEND_NEWLINE),
                          leftover_markup=parsed.leftover_markup,
                          dropped_templates=parsed.dropped_templates)
    records, splits, coverage = article_records(article, cfg.instructions)
    return PageResult("article", article_line=orjson.dumps(article, option=orjson.OPT_APPEND_NEWLINE),
                      instructions=_instruction_lines(records, cfg, splits, coverage),
                      leftover_markup=parsed.leftover_markup,
                      dropped_templates=parsed.dropped_templates)


def _process_batch(args: tuple[list[RawPage], IngestConfig]) -> list[PageResult]:
    pages, cfg = args
    return [process_page(p, cfg) for p in pages]


def _derive_batch(args: tuple[list[bytes], IngestConfig]) -> list[InstructionBatch]:
    """The instructions of selected articles (their lines in the partial articles file)."""
    from ingest.instructions import article_records
    from ingest.select import LINKS_FIELD

    lines, cfg = args
    batches = []
    for line in lines:
        article = orjson.loads(line)
        article.pop(LINKS_FIELD, None)
        records, splits, coverage = article_records(article, cfg.instructions)
        batches.append(_instruction_lines(records, cfg, splits, coverage))
    return batches


def _light(page: RawPage, cfg: IngestConfig) -> RawPage:
    """Pages that cannot become articles travel to workers without their text."""
    if page.namespace in cfg.namespaces or page.redirect:
        return page
    if page.namespace == CATEGORY_NS and cfg.select.category_depth:
        return page  # its category links make the category tree
    if page.text and page.text.lstrip()[:1] == "#" and redirect_target(page.text):
        return page
    return RawPage(page.id, page.namespace, page.title, page.redirect, page.revision_id,
                   page.timestamp, "")


def _batches(pages: Iterable[RawPage], size: int, cfg: IngestConfig) -> Iterator[list[RawPage]]:
    batch: list[RawPage] = []
    for page in pages:
        batch.append(_light(page, cfg))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fingerprint(dump: Path, cfg: IngestConfig) -> dict[str, Any]:
    st = dump.stat()
    settings = cfg.to_dict()
    settings.pop("workers")  # a resumed run may use another number of workers
    settings.pop("batch_pages")
    settings.pop("reader_cleans")
    settings.pop("max_hours", None)  # a budget checked before the run, not a setting of it
    # model-written questions run after the pages, with a cache of their own
    settings.get("instructions", {}).pop("generator", None)
    return {"dump": str(dump.resolve()), "size": st.st_size, "mtime": int(st.st_mtime),
            "config": settings}


_SPLIT = operator.itemgetter(1)
_PARTS = {"articles": "articles.partial.jsonl", "redirects": "redirects.jsonl",
          "train": "instructions.train.partial.jsonl", "val": "instructions.val.partial.jsonl",
          "categories": "category_pages.partial.jsonl"}


class _Run:
    """One ingest run: its partial files, counters and saved state."""

    def __init__(self, dump: Path, out: Path, cfg: IngestConfig, resume: bool):
        from ingest.instructions import InstructionStats

        self.dump, self.out, self.cfg = dump, out, cfg
        self.work = out / PARTIAL
        self.state_path = self.work / "state.json"
        self.fingerprint = _fingerprint(dump, cfg)
        self.counts: Counter = Counter()
        self.skipped: Counter = Counter()
        self.dropped: Counter = Counter()
        self.lines: Counter = Counter()
        self.stats = InstructionStats()
        self.seen = KeySet()  # every instruction record's id so far: 8 bytes each
        self.problems: list[dict[str, Any]] = []
        self.pages_done = 0
        self.elapsed_before = 0.0
        self._prepare(resume)
        self.writers = {name: (JsonlAppender if name in ("redirects", "categories")
                               else _BytesAppender)(
                            self.work / fname, flush_each_line=False)
                        for name, fname in _PARTS.items()}

    def _prepare(self, resume: bool) -> None:
        from ingest.instructions import InstructionStats

        if self.work.exists() and resume and self.state_path.exists():
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            if state.get("fingerprint") != self.fingerprint:
                raise InputError(
                    f"{self.work}: the interrupted run used another dump or other settings; "
                    f"run without --resume to start over")
            self.pages_done = state["pages_done"]
            self.counts.update(state["counts"])
            self.skipped.update(state["skipped"])
            self.dropped.update(state.get("dropped_templates", {}))
            self.problems = state.get("problems", [])
            self.elapsed_before = state.get("elapsed_s", 0.0)
            self.stats = InstructionStats(state.get("instructions"))
            # Lines written after the last saved state are dropped and redone.
            for name, fname in _PARTS.items():
                _truncate_lines(self.work / fname, state["lines"].get(name, 0))
                self.lines[name] = state["lines"].get(name, 0)
            for split in ("train", "val"):
                for keys in _record_keys(self.work / _PARTS[split]):
                    self.seen |= keys
            log.info("resuming %s after %d pages (%d articles)", self.dump, self.pages_done,
                     self.counts["article"])
            return
        if self.work.exists():
            if not resume:
                log.warning("%s holds an interrupted run; starting over (use --resume to continue it)",
                            self.work)
            shutil.rmtree(self.work)
        elif resume:
            log.warning("nothing to resume in %s; starting from the beginning", self.out)
        self.work.mkdir(parents=True)

    def write_instructions(self, batch: InstructionBatch) -> None:
        if batch.coverage is not None:
            self.stats.add_coverage(batch.coverage)
        keys = set(batch.keys)
        if len(keys) == len(batch.keys) and self.seen.isdisjoint(keys):
            # The usual case: nothing seen before, the article's lines go out in one write.
            self.seen.add_disjoint(keys)
            for split, text in batch.joined.items():
                if text:
                    self.writers[split].write_bytes(text)
            self._count(batch.rows)
            return
        # Some records were seen before (e.g. the same passage under another title): keep the
        # others, still one write per split.
        # (JSON escapes a newline inside a text: every b"\n" ends a line)
        pending = {split: iter(text[:-1].split(b"\n")) for split, text in batch.joined.items()}
        kept: dict[str, list[bytes]] = {"train": [], "val": []}
        kept_rows = []
        fresh = self.seen.add_new([row[0] for row in batch.rows])
        for row, new in zip(batch.rows, fresh, strict=True):
            line = next(pending[row[1]])
            if not new:
                self.stats.duplicates_removed += 1
                continue
            kept[row[1]].append(line + b"\n")
            kept_rows.append(row)
        for split, lines in kept.items():
            if lines:
                self.writers[split].write_bytes(b"".join(lines))
        self._count(kept_rows)

    def _count(self, rows: list[tuple[int, str, str, int]]) -> None:
        """Lines and task counts of the records written."""
        self.lines.update(map(_SPLIT, rows))
        self.stats.add_rows(rows)

    def save_state(self, elapsed: float) -> None:
        for writer in self.writers.values():
            writer.sync()
        atomic_write_json(self.state_path, {
            "fingerprint": self.fingerprint,
            "pages_done": self.pages_done,
            "lines": {name: self.lines[name] for name in _PARTS},
            "counts": dict(self.counts),
            "skipped": dict(self.skipped),
            "instructions": self.stats.to_dict(),
            "dropped_templates": dict(self.dropped.most_common(200)),
            "problems": self.problems[-200:],
            "elapsed_s": elapsed,
        }, indent=None)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()

    def problem(self, p: DumpProblem) -> None:
        self.problems.append(p.to_dict())
        (log.error if p.fatal else log.warning)("%s", p.describe(self.dump))

    def warn(self, message: str) -> None:
        self.problems.append({"kind": "page", "message": message})
        log.warning("%s: %s", self.dump, message)


class _BytesAppender(JsonlAppender):
    """The article and instruction files: lines arrive from the workers as UTF-8 bytes (as orjson
    writes them) and go to the file's byte layer as they are, never decoded to str and encoded
    back."""

    def write_bytes(self, data: bytes) -> None:
        """Append several complete lines at once (``data`` ends with a newline)."""
        self._fh.buffer.write(data)  # nothing goes through the text layer: no order to keep
        if self._flush_each_line:
            self._fh.buffer.flush()
        self.written += data.count(b"\n")


def _record_keys(path: Path, chunk: int = 1 << 18) -> Iterator[set[int]]:
    """The dedup keys of the records in an instruction file, ``chunk`` at a time. Its lines
    are orjson's, which write the id first: ``{"id":"<16 hex digits>",...``; read from there,
    not parsed as JSON (a resumed run at full scale reads tens of millions of lines)."""
    from ingest.instructions import dedup_key

    keys: set[int] = set()
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(b'{"id":"') and line[23:24] == b'"':
                keys.add(int(line[7:23], 16))
            elif line.strip():
                keys.add(dedup_key(orjson.loads(line)))
            if len(keys) >= chunk:
                yield keys
                keys = set()
    if keys:
        yield keys


def _truncate_lines(path: Path, keep: int) -> None:
    """Keep the first ``keep`` lines: those the saved state vouches for."""
    repair_jsonl_tail(path)
    if not path.exists():
        path.touch()
    with open(path, "rb+") as fh:
        for n in range(keep):
            if not fh.readline():
                raise InputError(
                    f"{path}: holds {n} lines but the saved state counts {keep}; the partial "
                    f"run cannot be resumed, run without --resume to start over")
        fh.truncate(fh.tell())


def _read_pages(run: _Run, reader: DumpReader) -> Iterator[RawPage]:
    for i, page in enumerate(reader):
        if run.cfg.max_pages is not None and i >= run.cfg.max_pages:
            return
        if i < run.pages_done:
            continue  # done before the interruption
        yield page


def _map(batches: Iterator[list[RawPage]], cfg: IngestConfig) -> Iterator[tuple[list[RawPage], list[PageResult]]]:
    """Results batch by batch, in dump order; with workers, cleaning runs in other processes
    while this one reads the dump and writes the outputs (and cleans a batch itself whenever
    every worker is busy, see :func:`_ordered_map`)."""
    items = ((batch, (batch, cfg)) for batch in batches)
    yield from _ordered_map(_process_batch, items, cfg.workers, cfg.reader_cleans)


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[tuple[Any, Any]],
                 workers: int, reader_cleans: bool = True) -> Iterator[tuple[Any, Any]]:
    """``(tag, fn(arg))`` for each ``(tag, arg)`` of ``items``, in their order.

    With ``workers`` processes, this process hands each worker up to two items at a time and,
    when all of them are busy, runs the next item itself instead of waiting (with
    ``reader_cleans``; without, it waits for the oldest): the reading
    process is the pipeline's first stage (reading the dump, writing the outputs) and would
    otherwise sit idle while the workers clean, as it did (~60% of the time with one worker).
    What an item gives does not depend on who runs it, so the outputs are the same."""
    if workers == 0:
        for tag, arg in items:
            yield tag, fn(arg)
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    # The pool's threads in this process move batches and results through pipes 64 KiB at a
    # time, taking the GIL for each piece; while this thread cleans a batch they would get it
    # only every switch interval (5 ms): a worker's ~2 MB of results would take ~0.2 s to be
    # read, the worker blocked meanwhile. A shorter interval lets them in at once. (When this
    # thread only reads, it waits on the workers often enough.)
    switch = sys.getswitchinterval()
    if reader_cleans:
        sys.setswitchinterval(min(switch, 0.0002))
    try:
        yield from _ordered_pool(fn, items, ctx, workers, reader_cleans)
    finally:
        sys.setswitchinterval(switch)


def _ordered_pool(fn: Callable[[Any], Any], items: Iterable[tuple[Any, Any]], ctx: Any,
                  workers: int, reader_cleans: bool) -> Iterator[tuple[Any, Any]]:
    ahead = 2 * workers  # items queued per worker: one running, one waiting
    window: deque[tuple[Any, Any, bool]] = deque()  # (tag, AsyncResult or result, is_async)
    with ctx.Pool(workers) as pool:

        def busy() -> int:
            return sum(1 for _, res, remote in window if remote and not res.ready())

        def done() -> Iterator[tuple[Any, Any]]:
            while window and (not window[0][2] or window[0][1].ready()):
                tag, res, remote = window.popleft()
                yield tag, (res.get() if remote else res)

        for tag, arg in items:
            yield from done()
            if not reader_cleans:
                while busy() >= ahead:  # wait for the oldest (its result goes out first)
                    tag0, res, _ = window.popleft()
                    yield tag0, res.get()
            if busy() < ahead:
                window.append((tag, pool.apply_async(fn, (arg,)), True))
            else:
                window.append((tag, fn(arg), False))
            while len(window) > 4 * ahead:  # bounded memory: wait for the oldest
                tag0, res, remote = window.popleft()
                yield tag0, (res.get() if remote else res)
        while window:
            tag, res, remote = window.popleft()
            yield tag, (res.get() if remote else res)


def _scan(run: _Run) -> DumpReader:
    """Read the dump; write articles, redirects and instructions incrementally."""
    from core.logs import progress

    reader = DumpReader(run.dump, on_problem=run.problem)
    start = time.monotonic()
    last_save = start
    bar = progress(desc="ingest", unit=" pages", initial=run.pages_done)
    pages = _read_pages(run, reader)
    for batch, results in _map(_batches(pages, run.cfg.batch_pages, run.cfg), run.cfg):
        for res in results:
            run.counts[res.kind] += 1
            if res.kind == "article":
                run.writers["articles"].write_bytes(res.article_line)
                run.lines["articles"] += 1
                if res.instructions is not None:  # None with ingest.select: derived at the end
                    run.write_instructions(res.instructions)
                if res.leftover_markup:
                    run.counts["pages_with_leftover_markup"] += 1
                if res.dropped_templates:
                    run.dropped.update(res.dropped_templates)
            elif res.kind == "redirect":
                run.writers["redirects"].write(res.redirect)
                run.lines["redirects"] += 1
            else:
                run.skipped[res.reason] += 1
                if res.category_page:
                    run.writers["categories"].write(res.category_page)
                    run.lines["categories"] += 1
            if res.warning:
                run.warn(res.warning)
        run.pages_done += len(batch)
        bar.update(len(batch))
        bar.set_postfix(articles=run.counts["article"], refresh=False)
        now = time.monotonic()
        if now - last_save > _STATE_EVERY_S:
            run.save_state(run.elapsed_before + now - start)
            last_save = now
    run.save_state(run.elapsed_before + time.monotonic() - start)
    bar.close()
    return reader


_TITLE_FIELD = re.compile(r'"title":("(?:[^"\\]|\\.)*")')


def _finalize(run: _Run) -> dict[str, Any]:
    """Attach aliases to their articles and add the instructions that use them (with
    ``ingest.select``: first choose the articles and derive their instructions)."""
    from ingest.instructions import alias_instructions
    from ingest.select import LINKS_FIELD

    selection = _select_and_derive(run) if run.cfg.select.active else None
    run.writers["redirects"].close()  # every redirect is written (closing twice is harmless)
    # The redirects by target (with a selection: those kept), 16 bytes each, not a dict of titles.
    aliases = RedirectIndex(run.work / _PARTS["redirects"])
    with aliases, atomic_writer(run.work / "articles.jsonl") as fh, \
            open(run.work / _PARTS["articles"], encoding="utf-8") as partial:
        for i, line in enumerate(partial):
            if selection is not None:
                if i not in selection.lines:
                    continue
                if LINKS_FIELD in line:
                    art = orjson.loads(line)
                    art.pop(LINKS_FIELD, None)
                    line = dumps(art) + "\n"
            m = _TITLE_FIELD.search(line, 0, 4096)
            names = aliases.aliases(json.loads(m.group(1))) if m else None
            if names:
                art = json.loads(line)
                art["aliases"] = sorted(set(names))
                line = dumps(art) + "\n"
                run.write_instructions(_instruction_lines(alias_instructions(art, run.cfg.instructions),
                                                          run.cfg))
            fh.write(line)
    run.close()
    os.replace(run.work / _PARTS["train"], run.work / "instructions.train.jsonl")
    os.replace(run.work / _PARTS["val"], run.work / "instructions.val.jsonl")
    result = {"train": run.lines["train"], "val": run.lines["val"], **run.stats.to_dict(),
              "alias_targets": aliases.targets}
    if selection is not None:
        result["selection"] = selection.report
    return result


def _select_and_derive(run: _Run):
    """Choose the articles (ingest.select), keep only the redirects to them, and derive the
    instructions of the chosen ones, in dump order (as an ingest without selection does)."""
    from ingest.select import choose

    redirects_path = run.work / _PARTS["redirects"]
    redirects = {rec["title"]: rec["target"] for _, rec in iter_jsonl(redirects_path)}
    run.writers["categories"].sync()
    pages = (rec for _, rec in iter_jsonl(run.work / _PARTS["categories"]))
    selection = choose(run.work / _PARTS["articles"], redirects, pages, run.cfg.select)
    del redirects
    kept = 0
    with atomic_writer(run.work / "redirects.kept.jsonl") as fh:
        for _, rec in iter_jsonl(redirects_path):
            if rec["target"] in selection.titles:
                fh.write(dumps(rec) + "\n")
                kept += 1
    run.writers["redirects"].close()
    os.replace(run.work / "redirects.kept.jsonl", redirects_path)
    selection.report["redirects_kept"] = kept

    def chosen_lines() -> Iterator[list[bytes]]:
        batch: list[bytes] = []
        with open(run.work / _PARTS["articles"], "rb") as fh:
            for i, line in enumerate(fh):
                if i in selection.lines:
                    batch.append(line)
                    if len(batch) >= run.cfg.batch_pages:
                        yield batch
                        batch = []
        if batch:
            yield batch

    run.writers["articles"].sync()
    for batches in _map_lines(chosen_lines(), run.cfg):
        for batch in batches:
            run.write_instructions(batch)
    return selection


def _map_lines(batches: Iterator[list[bytes]], cfg: IngestConfig) -> Iterator[list[InstructionBatch]]:
    """_derive_batch over the batches, in order; in ``cfg.workers`` processes when set."""
    items = ((None, (batch, cfg)) for batch in batches)
    for _, result in _ordered_map(_derive_batch, items, cfg.workers, cfg.reader_cleans):
        yield result


def run_ingest(dump: str | Path, out: str | Path, cfg: IngestConfig,
               resume: bool = False) -> dict[str, Any]:
    """Ingest a dump into ``out``; returns the report (also written as ingest_report.json)."""
    dump, out = Path(dump), Path(out)
    if not dump.is_file():
        raise InputError(f"dump not found: {dump}")
    if cfg.select.active:
        # A missing title or question file stops the run now, not after hours of reading.
        from ingest.select import check_files

        check_files(cfg.select)
    t0 = time.monotonic()
    run = _Run(dump, out, cfg, resume)
    try:
        reader = _scan(run)
        instructions = _finalize(run)
    finally:
        run.close()
    fatal = [p for p in run.problems if p.get("fatal")]
    elapsed = run.elapsed_before + time.monotonic() - t0
    pages = run.pages_done
    report = {
        "status": "incomplete" if fatal else "complete",
        "dump": str(dump.resolve()),
        "dump_bytes": dump.stat().st_size,
        "site": {"name": reader.site_name, "dbname": reader.db_name},
        "pages_seen": pages,
        "articles": run.counts["article"],
        "redirects": run.counts["redirect"],
        "skipped": dict(sorted(run.skipped.items())),
        "pages_with_leftover_markup": run.counts["pages_with_leftover_markup"],
        "instructions": instructions,
        "problems": run.problems[:200],
        "problem_count": len(run.problems),
        "dropped_templates_top": run.dropped.most_common(30),
        "elapsed_s": round(elapsed, 2),
        "pages_per_s": round(pages / elapsed, 1) if elapsed else None,
        "mb_per_s": round(reader.bytes_read / 1e6 / elapsed, 2) if elapsed else None,
        "workers": cfg.workers,
        "config": cfg.to_dict(),
        "versions": library_versions(("compara", "mwxml", "mwparserfromhell")),
    }
    selection = instructions.pop("selection", None)
    if selection is not None:
        # The outputs hold the selected articles and the redirects to them.
        report["articles"] = selection["total"]
        report["redirects"] = selection["redirects_kept"]
        selection["redirects_in_dump"] = run.counts["redirect"]
        report = {**report, "selection": selection}
    atomic_write_json(run.work / "ingest_report.json", report)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        os.replace(run.work / name, out / name)
    shutil.rmtree(run.work, ignore_errors=True)
    if fatal:
        raise IngestFailed(
            f"{dump}: {fatal[0]['message']}; kept the {report['articles']} articles read before "
            f"it (see {out / 'ingest_report.json'})", report)
    return report


def print_report(report: dict[str, Any], out: str | Path) -> None:
    """A short human summary of an ingest report."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ins = report["instructions"]
    table = Table(title=f"ingest of {Path(report['dump']).name}", show_header=False)
    table.add_row("pages read", f"{report['pages_seen']:,}")
    table.add_row("articles kept", f"{report['articles']:,}")
    table.add_row("redirects (aliases)", f"{report['redirects']:,}")
    if "selection" in report:
        from ingest.select import summary

        table.add_row("selected (ingest.select)", summary(report["selection"]))
        for warning in report["selection"]["warnings"]:
            table.add_row("selection warning", warning)
    skipped = ", ".join(f"{k} {v:,}" for k, v in report["skipped"].items()) or "none"
    table.add_row("skipped", skipped)
    table.add_row("instructions", f"{ins['train']:,} train + {ins['val']:,} val")
    cov = ins.get("coverage") or {}
    if cov.get("sentences"):
        facts = cov["facts_by_phrasings"]
        three = sum(v for k, v in facts.items() if int(k) >= 3)
        table.add_row("prose in training outputs",
                      f"{cov['sentence_coverage_train']:.1%} of {cov['sentences']:,} sentences "
                      f"(any split {cov['sentence_coverage_any']:.1%}); "
                      f"{three:,} of {sum(facts.values()):,} facts asked 3+ ways")
    table.add_row("by task", ", ".join(f"{t} {c['train'] + c['val']:,}"
                                       for t, c in sorted(ins.get("by_task", {}).items())))
    table.add_row("problems", f"{report['problem_count']:,}")
    table.add_row("speed", f"{report['pages_per_s']:,} pages/s, {report['mb_per_s']} MB/s "
                           f"({report['elapsed_s']} s, {report['workers']} worker(s))")
    console.print(table)
    console.print(f"outputs in {out}: " + ", ".join(OUTPUTS))

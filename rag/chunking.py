"""Articles → chunks, section by section, each chunk readable on its own.

A chunk never crosses a section boundary. Its text (what is embedded, keyword-indexed and shown
to the model) starts with a one-line header naming the article and the section path, e.g.
``Rio Verde-Claro — Geografia › Afluentes``, so a passage stands alone; ``body_offset`` tells
where the section text itself begins. Infobox facts become ``campo: valor`` lines, either in a
chunk of their own (``Título — Infobox``) or in front of the lead. Tables arrive from ingest as
``Coluna: valor; ...`` lines inside the section text and are chunked like any other text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.io import BadLine, iter_jsonl
from rag.config import IndexConfig

log = logging.getLogger(__name__)

INFOBOX_HEADING = "Infobox"
PATH_SEPARATOR = " › "
HEADER_SEPARATOR = " — "


@dataclass
class Chunk:
    """One indexed passage and where it comes from."""

    id: str
    text: str
    title: str
    section: str
    url: str
    page_id: int | str
    revision_id: int | str | None
    chunk_no: int
    body_offset: int

    @property
    def body(self) -> str:
        return self.text[self.body_offset:]

    def metadata(self) -> dict[str, Any]:
        return {"chunk_id": self.id, "title": self.title, "section": self.section,
                "url": self.url, "page_id": self.page_id, "revision_id": self.revision_id,
                "chunk_no": self.chunk_no, "body_offset": self.body_offset}

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "metadata": self.metadata()}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Chunk:
        m = rec["metadata"]
        return cls(id=rec["id"], text=rec["text"], title=m["title"], section=m["section"],
                   url=m["url"], page_id=m["page_id"], revision_id=m.get("revision_id"),
                   chunk_no=m["chunk_no"], body_offset=m["body_offset"])


@dataclass
class ReadReport:
    """What reading articles.jsonl met: counts and the bad lines (named, skipped)."""

    articles: int = 0
    skipped_empty: int = 0
    bad_lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"articles": self.articles, "skipped_empty": self.skipped_empty,
                "bad_lines": len(self.bad_lines), "bad_line_examples": self.bad_lines[:20]}


def make_splitter(cfg: IndexConfig):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(
        chunk_size=cfg.chunk_size, chunk_overlap=cfg.chunk_overlap,
        separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""], keep_separator="end",
        strip_whitespace=True)


def infobox_lines(infobox: dict[str, Any] | None) -> list[str]:
    """``{"nascimento_data": "3 de maio"}`` → ``["nascimento data: 3 de maio"]``."""
    lines = []
    for key, value in (infobox or {}).items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        value = " ".join(str(value or "").split())
        key = " ".join(str(key).replace("_", " ").split())
        if key and value:
            lines.append(f"{key}: {value}")
    return lines


def _section_paths(sections: list[dict[str, Any]]) -> list[str]:
    """The heading path of each section (level 3 under its level 2, ...); '' for the lead."""
    stack: list[tuple[int, str]] = []
    paths = []
    for sec in sections:
        heading = " ".join(str(sec.get("heading") or "").split())
        level = sec.get("level") or 0
        if not heading:
            paths.append("")
            continue
        level = level if isinstance(level, int) and level > 0 else 2
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        paths.append(PATH_SEPARATOR.join(h for _, h in stack))
    return paths


def article_chunks(article: dict[str, Any], cfg: IndexConfig, splitter=None) -> list[Chunk]:
    """All chunks of one article, in reading order (pure: same input, same chunks)."""
    splitter = splitter or make_splitter(cfg)
    title = " ".join(str(article.get("title") or "").split())
    page_id = article.get("id")
    sections = article.get("sections") or []
    if not sections and article.get("text"):
        sections = [{"heading": "", "level": 0, "text": article["text"]}]
    facts = infobox_lines(article.get("infobox")) if cfg.infobox != "none" else []

    pieces: list[tuple[str, str]] = []  # (section path, section text)
    if facts and cfg.infobox == "chunk":
        pieces.append((INFOBOX_HEADING, "\n".join(facts)))
    for path, sec in zip(_section_paths(sections), sections, strict=True):
        text = str(sec.get("text") or "").strip()
        if facts and cfg.infobox == "lead" and not path:
            text = "\n".join(facts) + ("\n\n" + text if text else "")
            facts = []
        if len(text) < max(cfg.min_chunk_chars, 1):
            continue
        pieces.append((path, text))
    if facts and cfg.infobox == "lead":  # an article without a lead section
        pieces.insert(0, ("", "\n".join(facts)))

    chunks: list[Chunk] = []
    for path, text in pieces:
        header = f"{title}{HEADER_SEPARATOR}{path}" if path else title
        for body in splitter.split_text(text):
            body = body.strip()
            if not body:
                continue
            no = len(chunks)
            chunks.append(Chunk(
                id=f"{page_id}-{no}", text=f"{header}\n{body}", title=title, section=path,
                url=str(article.get("url") or ""), page_id=page_id,
                revision_id=article.get("revision_id"), chunk_no=no,
                body_offset=len(header) + 1))
    return chunks


def _check_article(rec: dict[str, Any]) -> str | None:
    if rec.get("id") is None:
        return "article lacks 'id'"
    if not str(rec.get("title") or "").strip():
        return "article lacks 'title'"
    if not isinstance(rec.get("sections", []), list):
        return "'sections' is not a list"
    if rec.get("infobox") is not None and not isinstance(rec["infobox"], dict):
        return "'infobox' is not an object"
    return None


def iter_article_chunks(path: str | Path, cfg: IndexConfig,
                        report: ReadReport) -> Iterator[Chunk]:
    """Chunks of every good article of ``articles.jsonl``; bad lines are logged and counted."""
    splitter = make_splitter(cfg)
    seen: set[str] = set()

    def bad(item: BadLine) -> None:
        report.bad_lines.append(str(item))
        log.warning("skipped %s", item)

    for lineno, rec in iter_jsonl(path, on_error=bad):
        problem = _check_article(rec)
        if problem is None and str(rec["id"]) in seen:
            problem = f"duplicate article id {rec['id']!r}"
        if problem:
            bad(BadLine(str(path), lineno, problem))
            continue
        seen.add(str(rec["id"]))
        try:
            chunks = article_chunks(rec, cfg, splitter)
        except (TypeError, ValueError, AttributeError) as exc:
            bad(BadLine(str(path), lineno, f"cannot chunk article: {exc}"))
            continue
        if not chunks:
            report.skipped_empty += 1
            log.warning("%s:%d: article %r has no text; skipped", path, lineno, rec.get("title"))
            continue
        report.articles += 1
        yield from chunks

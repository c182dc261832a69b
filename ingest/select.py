"""`ingest.select`: which articles of the dump to keep (the union of the rules set).

The choice is made once the dump has been read, over the articles cleaned into the partial
``articles.jsonl``: a title file's redirect, a question's source article, a link neighbour or a
subcategory's page may come anywhere in the dump, before or after the articles they choose.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from core.io import InputError
from ingest.config import SelectConfig
from ingest.namespaces import CATEGORY_NS, namespace_of_prefix, normalize_title, split_title

log = logging.getLogger(__name__)

LINKS_FIELD = "_links"  # outgoing links in the partial articles file only (never published)
RULES = ("categories", "titles", "questions", "sample")
_LISTED = 20  # titles not found, listed in the report
_CATEGORY_LINK = re.compile(r"\[\[\s*([^\[\]|#:]+):([^\[\]|#]+)(?:#[^\[\]|]*)?(?:\|[^\[\]]*)?\]\]")


def category_name(name: str) -> str:
    """A category as the wiki reads it: "categoria:rios_de Portugal" -> "Rios de Portugal"."""
    if ":" in name:
        prefix, rest = name.split(":", 1)
        if namespace_of_prefix(prefix) == CATEGORY_NS:
            name = rest
    return normalize_title(name)


def page_categories(wikitext: str) -> list[str]:
    """The categories a page's wikitext puts it in (``[[Categoria:X]]``, not ``[[:Categoria:X]]``)."""
    names: dict[str, None] = {}
    for m in _CATEGORY_LINK.finditer(wikitext):
        if namespace_of_prefix(m.group(1)) == CATEGORY_NS:
            name = normalize_title(m.group(2))
            if name:
                names[name] = None
    return list(names)


def category_page(title: str, wikitext: str) -> dict[str, Any] | None:
    """A category page's name and parent categories (one line of the partial category file)."""
    ns, name = split_title(title)
    if ns != CATEGORY_NS or not name:
        return None
    return {"category": normalize_title(name), "parents": page_categories(wikitext or "")}


def category_closure(names: Iterable[str], depth: int,
                     pages: Iterable[dict[str, Any]]) -> set[str]:
    """``names`` and their subcategories ``depth`` levels down (cycles are harmless)."""
    chosen = {category_name(n) for n in names}
    if depth < 1:
        return chosen
    children: dict[str, list[str]] = {}
    for page in pages:
        for parent in page["parents"]:
            children.setdefault(parent, []).append(page["category"])
    frontier = set(chosen)
    for _ in range(depth):
        frontier = {c for p in frontier for c in children.get(p, ())} - chosen
        if not frontier:
            break
        chosen |= frontier
    return chosen


def read_title_file(path: str | Path) -> list[str]:
    """Titles of a title file: one a line, blank lines and ``#`` comments ignored."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"ingest.select.titles: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"ingest.select.titles: {path}: cannot be read ({exc})") from None
    titles = (normalize_title(line) for line in lines
              if line.strip() and not line.lstrip().startswith("#"))
    return list(dict.fromkeys(t for t in titles if t))


def question_titles(path: str | Path) -> list[str]:
    """The articles a question file names (``source_title``, ``source_titles``), in file order."""
    from core.questions import QuestionFileError, load_questions

    try:
        questions = load_questions(path)
    except QuestionFileError as exc:
        raise InputError(f"ingest.select.questions: {exc}") from None
    titles = (normalize_title(t) for q in questions for t in q.source_titles)
    return list(dict.fromkeys(t for t in titles if t))


def check_files(cfg: SelectConfig) -> None:
    """Read the title and question files once: an InputError names a missing or bad one."""
    if cfg.titles:
        read_title_file(cfg.titles)
    if cfg.questions:
        question_titles(cfg.questions)


def sample_key(seed: int, title: str) -> int:
    """The rank of an article in the random sample: a hash of (seed, title), so the sample
    depends neither on the dump's order nor on the run."""
    digest = hashlib.blake2b(f"{seed}\x00{title}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def resolve(title: str, redirects: dict[str, str]) -> str:
    """The article a title names, following redirects (a few hops; loops end)."""
    for _ in range(5):
        target = redirects.get(title)
        if target is None or target == title:
            break
        title = target
    return title


@dataclass
class Selection:
    """The lines of the partial articles file to keep, their titles, and what each rule chose."""

    lines: set[int] = field(default_factory=set)
    titles: set[str] = field(default_factory=set)
    report: dict[str, Any] = field(default_factory=dict)


def choose(articles: Path, redirects: dict[str, str], category_pages: Iterable[dict[str, Any]],
           cfg: SelectConfig) -> Selection:
    """Apply the rules of ``cfg`` to the articles of ``articles`` (one JSON line each)."""
    wanted_categories = (category_closure(cfg.categories, cfg.category_depth, category_pages)
                         if cfg.categories else set())
    listed = read_title_file(cfg.titles) if cfg.titles else []
    sources = question_titles(cfg.questions) if cfg.questions else []
    linked_from = {resolve(t, redirects) for t in sources} if cfg.neighbours else set()

    line_of: dict[str, int] = {}
    by_rule: dict[str, set[int]] = {rule: set() for rule in RULES}
    links: dict[str, list[str]] = {}
    sample: list[tuple[int, int]] = []  # (-key, line): a max-heap of the N smallest keys
    count = 0
    with open(articles, "rb") as fh:
        for i, line in enumerate(fh):
            art = orjson.loads(line)
            title = art["title"]
            line_of[title] = i
            count += 1
            if wanted_categories and any(normalize_title(c) in wanted_categories
                                         for c in art.get("categories") or ()):
                by_rule["categories"].add(i)
            if title in linked_from:
                links[title] = art.get(LINKS_FIELD) or []
            if cfg.sample:
                item = (-sample_key(cfg.seed, title), i)
                if len(sample) < cfg.sample:
                    heapq.heappush(sample, item)
                elif item > sample[0]:
                    heapq.heapreplace(sample, item)
    by_rule["sample"] = {i for _, i in sample}

    not_found: dict[str, list[str]] = {}
    for rule, titles in (("titles", listed), ("questions", sources)):
        missing = []
        for title in titles:
            found = line_of.get(resolve(title, redirects))
            if found is None:
                missing.append(title)
            else:
                by_rule[rule].add(found)
        if missing:
            not_found[rule] = missing
    neighbours: set[int] = set()
    if cfg.neighbours:
        for title in sources:
            source = resolve(title, redirects)
            taken = 0
            for target in links.get(source, ()):
                found = line_of.get(resolve(target, redirects))
                if found is None or found == line_of[source]:
                    continue
                neighbours.add(found)
                taken += 1
                if taken == cfg.neighbours:
                    break
        neighbours -= by_rule["questions"]  # counted as neighbours: those not named
        by_rule["questions"] |= neighbours

    chosen = set().union(*by_rule.values())
    titles = {t for t, i in line_of.items() if i in chosen}
    return Selection(chosen, titles, _report(cfg, by_rule, neighbours, not_found, count,
                                             len(chosen)))


def _report(cfg: SelectConfig, by_rule: dict[str, set[int]], neighbours: set[int],
            not_found: dict[str, list[str]], articles: int, total: int) -> dict[str, Any]:
    settings = {"categories": bool(cfg.categories), "titles": bool(cfg.titles),
                "questions": bool(cfg.questions), "sample": bool(cfg.sample)}
    rules = {rule: len(by_rule[rule]) for rule in RULES if settings[rule]}
    warnings = []
    for rule, n in rules.items():
        if not n:
            what = {"categories": f"categories {cfg.categories} (depth {cfg.category_depth})",
                    "titles": f"title file {cfg.titles}",
                    "questions": f"question file {cfg.questions}",
                    "sample": f"sample of {cfg.sample}"}[rule]
            warnings.append(f"ingest.select.{rule} selected no article: {what}")
    for rule, missing in not_found.items():
        source = cfg.titles if rule == "titles" else cfg.questions
        warnings.append(f"ingest.select.{rule}: {len(missing)} title(s) of {source} not in the "
                        f"dump's articles, e.g. {missing[:3]}")
    for message in warnings:
        log.warning("%s", message)
    report: dict[str, Any] = {"rules": rules, "total": total, "articles_in_dump": articles}
    if cfg.questions and cfg.neighbours:
        report["question_neighbours"] = len(neighbours)
    report["not_found"] = {rule: {"count": len(m), "first": m[:_LISTED]}
                           for rule, m in not_found.items()}
    report["warnings"] = warnings
    return report


def summary(report: dict[str, Any]) -> str:
    """One line: "categories 4, titles 3, questions 6 (2 neighbours) -> 9 of 51 articles"."""
    parts = []
    for rule, n in report["rules"].items():
        extra = (f" ({report['question_neighbours']} neighbours)"
                 if rule == "questions" and "question_neighbours" in report else "")
        parts.append(f"{rule} {n:,}{extra}")
    return f"{', '.join(parts)} -> {report['total']:,} of {report['articles_in_dump']:,} articles"

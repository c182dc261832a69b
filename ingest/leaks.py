"""Count the wiki markup left in text that should be clean.

``count_leaks(text)`` returns, per kind of markup, how many times it occurs; ``find_leaks``
gives each occurrence with a snippet around it, for error messages. The patterns are chosen to
fire on markup and not on Portuguese prose: a ``|`` never appears in prose, a namespace prefix
counts only when glued to a name (``Categoria:Rios``, not a table line ``Imagem: retrato``),
``<`` only when a tag name follows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LEAK_PATTERNS: dict[str, str] = {
    "template braces": r"\{\{|\}\}",
    "link brackets": r"\[\[|\]\]",
    "table markup": r"\{\||\|\}",
    "pipe": r"\|",
    "cell attribute": (r"\b(?:style|class|scope|align|valign|bgcolor|width|height|cellpadding|"
                       r"cellspacing|border)\s*=|\b(?:rowspan|colspan)\b"),
    "image option": (r"\bthumb(?:nail)?\b|\bminiaturadaimagem\b|\bupright\b|\bpx\||"
                     r"\b\d+(?:x\d+)?px\b"),
    "namespace prefix": (r"\b(?:Categoria|Category|Ficheiro|Imagem|Arquivo|File|Image|"
                         r"Predefinição|Predefinicao|Template|Wikipédia|Wikipedia|Portal):"
                         r"(?=[^\s\d])"),
    "HTML entity": r"&(?:[a-zA-Z][a-zA-Z0-9]{1,7}|#\d{1,7}|#[xX][0-9a-fA-F]{1,6});",
    "tag": r"<(?:/?[a-zA-Z][a-zA-Z0-9]*[\s/>]|!--)|-->",
    "bold/italic quotes": r"''",
    "heading": r"^\s*==|==\s*$",
    "magic word": r"__[A-ZÀ-Ú_]{3,}__",
}
_COMPILED = {name: re.compile(pat, re.MULTILINE) for name, pat in LEAK_PATTERNS.items()}
# One pass that tells whether anything is there (the usual case: nothing).
_ANY = re.compile("|".join(f"(?:{p})" for p in LEAK_PATTERNS.values()), re.MULTILINE)


@dataclass(frozen=True)
class Leak:
    kind: str
    offset: int
    snippet: str


def count_leaks(text: str) -> dict[str, int]:
    """How many times each kind of markup occurs in ``text`` (every kind listed, 0 when none)."""
    if not _ANY.search(text):
        return dict.fromkeys(LEAK_PATTERNS, 0)
    return {name: len(rx.findall(text)) for name, rx in _COMPILED.items()}


def find_leaks(text: str, context: int = 40) -> list[Leak]:
    """Every occurrence of markup, with ``context`` characters either side."""
    if not _ANY.search(text):
        return []
    found = []
    for name, rx in _COMPILED.items():
        for m in rx.finditer(text):
            snippet = text[max(0, m.start() - context):m.end() + context].replace("\n", "⏎")
            found.append(Leak(name, m.start(), snippet))
    return sorted(found, key=lambda leak: leak.offset)


def total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def article_texts(article: dict) -> list[tuple[str, str]]:
    """The texts of an ``articles.jsonl`` record that must be clean: (where, text) pairs."""
    out = [("text", article.get("text", ""))]
    out += [(f"heading {s.get('heading')!r}", s.get("heading", "")) for s in article.get("sections", [])]
    out += [(f"infobox {k!r}", v) for k, v in (article.get("infobox") or {}).items()]
    return out


def article_leaks(article: dict) -> list[tuple[str, Leak]]:
    """Every leak in an article record's text, section headings and infobox values."""
    return [(where, leak) for where, text in article_texts(article) for leak in find_leaks(text)]

"""Wikitext to clean text: sections, infobox fields, categories, tables as text.

The cleaner works innermost-first with a few linear passes, which keeps it at dump speed:

1. drop comments, ``<ref>``s, galleries and other non-text elements;
2. templates, innermost first: the infobox is captured as fields, common inline templates are
   rendered to their visible text (``{{lang|en|x}}`` -> ``x``, ``{{séc|XVIII}}`` -> ``século
   XVIII``), everything else is dropped;
3. links, innermost first: text kept, files/images dropped (with their captions), categories
   recorded, language links dropped;
4. wikitables rendered as ``Column: value; Column: value`` lines (or dropped), their cells
   laid on a column grid so rowspans and colspans keep every value under its column;
5. formatting, HTML tags and entities; then headings split the text into sections.

A full parse with mwparserfromhell runs at ~3.5 MB/s even on template-free text, below what
wikiextractor reaches end to end (~10 MB/s), so it cannot sit in the per-page path; the tests
use it as the reference parser that this cleaner is checked against.
"""

from __future__ import annotations

import html
import operator
import re
from collections import Counter
from dataclasses import dataclass, field

from ingest import templates as tpl
from ingest.namespaces import (
    CATEGORY_NS,
    DISAMBIGUATION_TEMPLATES,
    FILE_NS,
    LANGUAGE_PREFIXES,
    namespace_of_prefix,
    normalize_title,
)

# Sections that hold no article prose: references, links, bibliographies.
SKIPPED_SECTIONS = frozenset(s.casefold() for s in (
    "Referências", "Referência", "Notas", "Notas e referências", "Referências e notas",
    "Ligações externas", "Links externos", "Ver também", "Veja também", "Bibliografia",
    "Leitura adicional", "Leituras adicionais", "Fontes", "Notas de rodapé", "Galeria",
    "Galeria de imagens", "References", "External links", "See also", "Further reading",
))

INFOBOX_PREFIXES = ("info/", "infobox", "caixa de informação", "caixa de informacao", "taxocaixa")
_IMAGE_FIELD = re.compile(
    r"^(?:imagem|image|img|foto|figura|mapa|map|bandeira|brasão|brasao|escudo|selo|logo|"
    r"assinatura|legenda|caption|alt|tamanho|largura|size|upright|pushpin|coordenadas|coord|latd|longd)"
    r"(?:[_ ]|\d|$)",
    re.IGNORECASE)
# A file name, or an image size under a field name the list above does not know (tam_img=250px).
_IMAGE_VALUE = re.compile(
    r"\.(?:jpe?g|png|svg|gif|tiff?|webp|ogg|ogv|webm)\s*$|^\s*(?:\d+\s*(?:x\s*\d+\s*)?px|upright[=\d.,\s]*)\s*$",
    re.IGNORECASE)

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_REF_SELF = re.compile(r"<ref\b[^>]*?/\s*>", re.IGNORECASE)
# A ref never closed takes its paragraph with it, not the rest of the page.
_REF = re.compile(r"<ref\b[^>]*>(?:.*?</ref\s*>|.*?(?=\n\n|\n=|\Z))", re.IGNORECASE | re.DOTALL)
_DROP_ELEMENTS = re.compile(
    r"<(references|gallery|math|chem|timeline|imagemap|score|graph|mapframe|maplink|"
    r"syntaxhighlight|source|templatedata|includeonly|hiero|ce|inputbox|categorytree)\b[^>]*?"
    r"(?:/\s*>|>.*?(?:</\1\s*>|\Z))",
    re.IGNORECASE | re.DOTALL)
# A formula is dropped whole; one on a line of its own (":<math>...</math>.") goes with its
# line, its indent and the sentence's closing punctuation, instead of leaving a lone "." behind.
_MATH = re.compile(r"<math\b[^>]*>.*?(?:</math\s*>|\Z)", re.IGNORECASE | re.DOTALL)
_MATH_LINE_HEAD = re.compile(r"[ \t:]*\Z")
_MATH_LINE_TAIL = re.compile(r"[ \t]*[.,;]?[ \t]*(?:\n|\Z)")
_NOWIKI = re.compile(r"<nowiki\s*>(.*?)</nowiki\s*>|<nowiki\s*/\s*>", re.IGNORECASE | re.DOTALL)
_KEEP_INNER_TAGS = re.compile(r"</?(?:noinclude|onlyinclude|pre|poem|blockquote)\b[^>]*>",
                              re.IGNORECASE)
_MAGIC_WORD = re.compile(r"__[A-ZÀ-Ú_]{3,}__")
# Innermost template: no "{{" or "}}" inside (unrolled loop: much faster than an alternation).
_TEMPLATE = re.compile(r"\{\{([^{}]*(?:(?:\{(?!\{)|\}(?!\}))[^{}]*)*)\}\}")
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]([a-záâãàçéêẽíóôõúü]*)")
_EXTERNAL = re.compile(r"\[(?:https?:|ftp:|//)[^\s\]]*(?:\s+([^\]]*))?\]")
_BOLD_ITALIC = re.compile(r"'{2,5}")
_BR = re.compile(r"<br\s*/?\s*>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*?/?>")
_HEADING = re.compile(r"^(={1,6})\s*(.+?)\s*\1\s*$")
_LIST_MARKER = re.compile(r"^[*#:;]+\s*")
_HRULE = re.compile(r"^-{4,}\s*")
_SPACES = re.compile(r"[ \t\u00a0\u2009\u202f]+")
_EMPTY_PARENS = re.compile(r"\(\s*[,;:]?\s*\)")
_SPACE_AFTER_PAREN = re.compile(r"\( +")
# (a space and then " *", not " +": a pattern that opens with a literal or a character class lets
# the engine skip to the candidates in C instead of trying the pattern at every position)
_SPACE_BEFORE_PUNCT = re.compile(r"  *([,.;:!?)])")
# The match replaced by its first group: a callable, because a "\1" template costs a Python-level
# call on every sub, match or not.
_FIRST_GROUP = operator.itemgetter(1)
# Markup left unpaired: a template never closed goes with the rest of its line, a line that
# still starts with "|" (a parameter of that template, a row of a broken table) goes whole,
# stray brackets and braces go alone.
_LEFTOVER = re.compile(r"\{\{[^\n]*|\}\}|\[\[|\]\]|\{\||^[ \t]*\|[^\n]*", re.MULTILINE)
_NOWIKI_ESCAPES = str.maketrans({"[": "&#91;", "]": "&#93;", "{": "&#123;", "}": "&#125;",
                                 "|": "&#124;", "'": "&#39;", "<": "&lt;", ">": "&gt;",
                                 "=": "&#61;", "*": "&#42;", "#": "&#35;", ":": "&#58;"})


@dataclass
class Section:
    heading: str
    level: int
    text: str


@dataclass
class ParsedPage:
    sections: list[Section]
    infobox_type: str | None = None
    infobox: dict[str, str] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # main-namespace link targets, in link order
    is_disambiguation: bool = False
    leftover_markup: int = 0
    dropped_templates: Counter = field(default_factory=Counter)

    @property
    def text(self) -> str:
        parts = []
        for s in self.sections:
            parts.append(f"{s.heading}\n{s.text}" if s.heading else s.text)
        return "\n\n".join(parts)


class _Context:
    """What the passes collect about one page."""

    __slots__ = ("title", "infobox_type", "infobox", "categories", "links", "disambiguation",
                 "dropped", "tables")

    def __init__(self, title: str, tables: str):
        self.title = title
        self.infobox_type: str | None = None
        self.infobox: dict[str, str] = {}
        self.categories: list[str] = []
        self.links: list[str] = []  # raw targets; parse_wikitext normalises them
        self.disambiguation = False
        self.dropped: Counter = Counter()
        self.tables = tables


# -- template parameters ------------------------------------------------------------------
def split_params(body: str) -> list[str]:
    """Split a template body on ``|`` outside ``[[...]]`` (inner templates are already gone)."""
    if "[[" not in body:
        return body.split("|")
    parts, depth, start = [], 0, 0
    for m in _PARAM_TOKEN.finditer(body):  # only the brackets and pipes, not every character
        token = m.group()
        if token == "[[":
            depth += 1
        elif token == "]]":
            depth = max(depth - 1, 0)
        elif depth == 0:
            parts.append(body[start:m.start()])
            start = m.end()
    parts.append(body[start:])
    return parts


_PARAM_TOKEN = re.compile(r"\[\[|\]\]|\|")


def parse_params(parts: list[str]) -> tpl.Params:
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in parts:
        eq = part.find("=")
        if eq > 0 and "[[" not in part[:eq] and "<" not in part[:eq] and "\n" not in part[:eq].strip():
            named[part[:eq].strip()] = part[eq + 1:]
        else:
            positional.append(part)
    return positional, named


def _template_sub(ctx: _Context):
    def sub(m: re.Match) -> str:
        body = m.group(1)
        head, _, _ = body.partition("|")
        name = head.strip()
        colon = name.find(":")
        if colon > 0 and "|" not in name:
            magic = tpl.render_magic(name[:colon], body[colon + 1:].strip(), ctx.title)
            if magic is not None:
                return magic
        key = name.replace("_", " ").strip().lower()
        if key.startswith("predefinição:") or key.startswith("template:"):
            key = key.split(":", 1)[1].strip()
        if key.startswith(INFOBOX_PREFIXES):
            if ctx.infobox_type is None:
                ctx.infobox_type = name.split("/", 1)[1].strip() if "/" in name else name
                _, named = parse_params(split_params(body)[1:])
                for k, v in named.items():
                    k = k.strip()
                    if not k or _IMAGE_FIELD.match(k):
                        continue
                    value = clean_inline(v, ctx, sep=", ")
                    if value and not _IMAGE_VALUE.search(value):
                        ctx.infobox[k] = value
            return ""
        if key in DISAMBIGUATION_TEMPLATES:
            ctx.disambiguation = True
            return ""
        if not tpl.is_rendered(key):
            ctx.dropped[key[:60]] += 1
            return ""
        parts = split_params(body)
        rendered = tpl.render(key, parse_params(parts[1:]), ctx.title)
        if rendered is None:
            ctx.dropped[key[:60]] += 1
            return ""
        return rendered

    return sub


def _expand_templates(text: str, ctx: _Context) -> str:
    sub = _template_sub(ctx)
    while "{{" in text:
        new = _TEMPLATE.sub(sub, text)
        if new == text:
            break
        text = new
    return text


# -- links --------------------------------------------------------------------------------
def _link_sub(ctx: _Context):
    def sub(m: re.Match) -> str:
        inner, trail = m.group(1), m.group(2)
        target, pipe, label = inner.partition("|")
        target = target.strip()
        if target.startswith(":"):
            # [[:Categoria:X|texto]] is a visible link, not a category assignment.
            shown = label if pipe and label.strip() else target[1:].split(":", 1)[-1]
            return shown.strip() + trail
        if ":" in target:
            prefix, rest = target.split(":", 1)
            ns = namespace_of_prefix(prefix)
            if ns == FILE_NS:
                return ""
            if ns == CATEGORY_NS:
                name = " ".join(rest.replace("_", " ").split())
                if name and name not in ctx.categories:
                    ctx.categories.append(name)
                return ""
            if ns is None and prefix.strip().lower() in LANGUAGE_PREFIXES:
                return ""
            if ns is None:
                ctx.links.append(target)  # a title with a colon: "Star Wars: Episódio I"
            elif not (pipe and label.strip()):
                # [[Portal:Brasil]], [[Predefinição:X]]: the title without its namespace.
                target = rest.strip()
        else:
            ctx.links.append(target)
        if pipe:
            if label.strip():
                return label.strip() + trail
            # The pipe trick: [[Salvador (Bahia)|]] shows "Salvador".
            return re.sub(r"\s*\([^)]*\)\s*$", "", target.split(":", 1)[-1]) + trail
        return target + trail

    return sub


def _expand_links(text: str, ctx: _Context) -> str:
    # External links first: their single brackets inside a file's caption would otherwise
    # keep the innermost-link pattern from matching the file link.
    if "[http" in text or "[//" in text or "[ftp:" in text:
        text = _EXTERNAL.sub(lambda m: (m.group(1) or "").strip(), text)
    sub = _link_sub(ctx)
    while "[[" in text:
        new = _LINK.sub(sub, text)
        if new == text:
            break
        text = new
    return text


# -- tables -------------------------------------------------------------------------------
# rowspan="2", rowspan=2, and the typo rowspan"2" that real pages carry (the wiki honours it).
_SPAN = re.compile(r"\b(row|col)span\s*=?\s*[\"']?\s*(\d+)", re.IGNORECASE)
_MAX_COLSPAN = 64
_CELL_LIST_MARKER = re.compile(r"^[*#:;]+\s*")
_HEADER_CELLS = re.compile(r"!!|\|\|")


class _Cell:
    __slots__ = ("header", "text", "rowspan", "colspan", "clean")

    def __init__(self, header: bool, raw: str):
        # MediaWiki's rule: what comes before a cell's first "|" is its attributes, unless it
        # holds a link (links are already expanded here, so only a broken one would remain).
        bar = raw.find("|")
        self.rowspan = self.colspan = 1
        if bar >= 0 and "[[" not in raw[:bar]:
            attrs, raw = raw[:bar], raw[bar + 1:]
            if "span" in attrs:
                for m in _SPAN.finditer(attrs):
                    if m.group(1).lower() == "row":
                        self.rowspan = max(1, int(m.group(2)))
                    else:
                        self.colspan = min(max(1, int(m.group(2))), _MAX_COLSPAN)
        self.header = header
        self.text = raw.strip()
        self.clean: str | None = None  # the cleaned text, once asked for


def _table_rows(table: str) -> tuple[str, list[list[_Cell]]]:
    caption = ""
    rows: list[list[_Cell]] = []
    current: list[_Cell] = []
    for raw in table.split("\n")[1:]:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("|}"):
            break
        if line.startswith("|+"):
            caption = _Cell(False, line[2:]).text
        elif line.startswith("|-"):
            if current:
                rows.append(current)
            current = []
        elif line.startswith("!"):
            current.extend(_Cell(True, cell) for cell in _HEADER_CELLS.split(line[1:]))
        elif line.startswith("|"):
            current.extend(_Cell(False, cell) for cell in line[1:].split("||"))
        else:
            # A cell's text continues on the next lines (paragraphs, lists, a nested table).
            cell = current[-1] if current else rows[-1][-1] if rows else None
            if cell is not None:
                listed = line[0] in "*#:;"
                item = _CELL_LIST_MARKER.sub("", line) if listed else line
                joint = ", " if listed else " "
                cell.text = f"{cell.text}{joint}{item}" if cell.text else item
    if current:
        rows.append(current)
    return caption, rows


def _grid(rows: list[list[_Cell]]) -> list[list[_Cell | None]]:
    """Rows laid on a grid of columns: a rowspan cell fills its column in the rows below (as a
    reader sees it), a colspan cell fills its columns; so later cells keep their columns."""
    held: dict[int, list] = {}  # column -> [rows still to fill, cell] for rowspans from above
    grid: list[list[_Cell | None]] = []

    def take(col: int) -> _Cell:
        slot = held[col]
        slot[0] -= 1
        if not slot[0]:
            del held[col]
        return slot[1]

    for row in rows:
        out: list[_Cell | None] = []
        col = 0
        for cell in row:
            while col in held:
                out.append(take(col))
                col += 1
            for k in range(cell.colspan):
                out.append(cell)
                if cell.rowspan > 1:
                    held[col + k] = [cell.rowspan - 1, cell]
            col += cell.colspan
        while held and max(held) >= col:
            out.append(take(col) if col in held else None)
            col += 1
        grid.append(out)
    return grid


def render_table(table: str, ctx: _Context) -> str:
    """A wikitable as text: one line per row, ``Header: value; Header: value``. Header rows
    stacked by colspans are joined per column (``Altitude — metros``); a row that is one cell
    across the whole table (a sub-heading, a note) stays a plain line."""
    caption, rows = _table_rows(table)
    if not rows:
        return ""

    def clean(cell: _Cell) -> str:
        if cell.clean is None:
            # ";" separates the pairs of a row line, so a value's own ";" reads ", ".
            text = clean_inline(cell.text, ctx, sep=", ")
            if "|" in text or ";" in text:
                text = text.replace("|", " ").replace(";", ",").strip()
            cell.clean = text
        return cell.clean

    out: list[str] = []
    if caption:
        out.append(clean_inline(caption, ctx, sep=" "))
    headers: list[list[str]] = []  # per column, its names from the top header row down
    # Header rows wait for a data row to name; header rows with none after them (a "Total"
    # footer, a table of headers only) are text of their own.
    header_block: list[list[_Cell | None]] = []
    for row in _grid(rows):
        first = row[0]
        if len(row) > 1 and first is not None and all(c is first for c in row):
            if text := clean(first):  # one cell across the table: a sub-heading or a note
                out.append(text)
            continue
        if all(c is None or c.header for c in row):
            header_block.append(row)
            continue
        if header_block:
            headers = _column_headers(header_block, clean)
            header_block = []
        pairs: list[str] = []
        j, width, n_headers = 0, len(row), len(headers)
        while j < width:
            cell = row[j]
            k = j + 1
            if cell is not None and cell.colspan > 1:
                while k < width and row[k] is cell:
                    k += 1
            if cell is not None and (value := clean(cell)):
                if k == j + 1:
                    name = " — ".join(headers[j]) if j < n_headers else ""
                else:
                    name = _spanned_name(headers[j:k])
                pairs.append(f"{name}: {value}" if name else value)
            j = k
        if pairs:
            out.append("; ".join(pairs))
    for row in header_block:
        line = "; ".join(t for t in map(clean, dict.fromkeys(c for c in row if c is not None)) if t)
        if line:
            out.append(line)
    return "\n" + "\n".join(out) + "\n"


def _column_headers(block: list[list[_Cell | None]], clean) -> list[list[str]]:
    """Each column's names down stacked header rows (a name spanned down is not repeated)."""
    width = max(len(r) for r in block)
    names = []
    for j in range(width):
        parts: list[str] = []
        for row in block:
            cell = row[j] if j < len(row) else None
            text = clean(cell) if cell is not None else ""
            if text and text not in parts:
                parts.append(text)
        names.append(parts)
    return names


def _spanned_name(columns: list[list[str]]) -> str:
    """The name of a value across several columns: what their names share ("Altitude" over
    "metros" and "pés"), else each name once ("Nascimento / Morte")."""
    columns = [c for c in columns if c]
    if not columns:
        return ""
    shared = []
    for level in zip(*columns, strict=False):
        if any(name != level[0] for name in level):
            break
        shared.append(level[0])
    if shared:
        return " — ".join(shared)
    return " / ".join(dict.fromkeys(" — ".join(c) for c in columns))


_TABLE_EDGE = re.compile(r"^[ \t:]*(\{\||\|\})", re.MULTILINE)


def _innermost_tables(text: str) -> list[tuple[int, int]]:
    """Spans of the tables that hold no other table ("{|" ... "|}" lines, paired; a table
    left open runs to the end of the text, as the wiki renders it)."""
    spans: list[tuple[int, int]] = []
    stack: list[tuple[int, bool]] = []  # (start, holds a nested table)
    for m in _TABLE_EDGE.finditer(text):
        if m.group(1) == "{|":
            if stack:
                stack[-1] = (stack[-1][0], True)
            stack.append((m.start(), False))
        elif stack:
            start, nested = stack.pop()
            if not nested:
                end = text.find("\n", m.end())
                spans.append((start, len(text) if end < 0 else end))
    if stack and not stack[-1][1] and not spans:
        spans.append((stack[-1][0], len(text)))
    return spans


def _expand_tables(text: str, ctx: _Context) -> str:
    while "{|" in text:
        spans = _innermost_tables(text)
        if not spans:
            break
        parts, last = [], 0
        for start, end in spans:
            parts.append(text[last:start])
            parts.append("" if ctx.tables == "drop" else render_table(text[start:end], ctx))
            last = end
        parts.append(text[last:])
        text = "".join(parts)
    return text


# -- the passes ---------------------------------------------------------------------------
def _strip_elements(text: str) -> str:
    if "<!--" in text:
        text = _COMMENT.sub("", text)
    if "<" not in text:
        return text
    text = _NOWIKI.sub(lambda m: (m.group(1) or "").translate(_NOWIKI_ESCAPES), text)
    text = _REF_SELF.sub("", text)
    text = _REF.sub("", text)
    if "<math" in text:
        text = _drop_math(text)
    text = _DROP_ELEMENTS.sub("", text)
    return _KEEP_INNER_TAGS.sub("", text)


def _drop_math(text: str) -> str:
    parts, last = [], 0
    for m in _MATH.finditer(text):
        start, end = m.start(), m.end()
        line_start = text.rfind("\n", 0, start) + 1
        if _MATH_LINE_HEAD.match(text, line_start, start):
            tail = _MATH_LINE_TAIL.match(text, end)
            if tail:
                start, end = line_start, tail.end()
        if start < last:  # a second formula on the line of one already dropped
            start = last
        parts.append(text[last:start])
        last = end
    parts.append(text[last:])
    return "".join(parts)


def _finish_inline(text: str, sep: str) -> str:
    if "''" in text:
        text = _BOLD_ITALIC.sub("", text)
    if "<" in text:
        text = _BR.sub(sep, text)
        text = _TAG.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return text


def clean_inline(text: str, ctx: _Context, sep: str = " ") -> str:
    """Clean a fragment (an infobox value, a table cell) to one line of text."""
    text = _expand_templates(text, ctx) if "{{" in text else text
    text = _expand_links(text, ctx) if "[" in text else text
    text = _finish_inline(text, sep)
    if "\n" in text:
        # A list inside a value or a cell ("* A\n* B") reads "A, B".
        if "\n*" in text or "\n#" in text or text[:1] in "*#":
            text = _VALUE_LIST_ITEM.sub(", ", "\n" + text).lstrip(", ")
        text = text.replace("\n", " ")
    text = _collapse_spaces(text)
    if "(" in text:
        text = _EMPTY_PARENS.sub("", text)
        if "( " in text:  # "({{Flagicon|ENG}} Inglaterra)": the icon went, its space stays
            text = _SPACE_AFTER_PAREN.sub("(", text)
    text = _SPACE_BEFORE_PUNCT.sub(_FIRST_GROUP, text)
    return text.strip(" ,;")


_VALUE_LIST_ITEM = re.compile(r"\n[ \t]*[*#]+[ \t]*")
_LIST_MARKERS = re.compile(r"^[*#:;]+[ \t]*", re.MULTILINE)
_HRULES = re.compile(r"^-{4,}[ \t]*", re.MULTILINE)
# Runs of spacing to collapse: two or more, or one that is not a plain space (a plain single
# space, between every two words, is left alone: replacing it by itself costs the most).
_SPACE_RUNS = re.compile(r"[ \t\u00a0\u2009\u202f]{2,}|[\t\u00a0\u2009\u202f]")
# "^ +| +$" written to open with its space (see _SPACE_BEFORE_PUNCT)
_LINE_EDGE_SPACES = re.compile(r" (?<=^ ) *|  *$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
# "^(={1,6})...": opening with the "=" (its line start looked behind for) lets the engine jump from
# "=" to "=" instead of trying every position of the page.
_HEADING_LINE = re.compile(r"(=(?<=^=)={0,5})[ \t]*(.+?)[ \t]*\1[ \t]*$", re.MULTILINE)


def _collapse_spaces(text: str) -> str:
    """Runs of spacing to one plain space (what _SPACES.sub(" ", text) gives, without rewriting
    every single space between two words)."""
    if "  " in text or "\t" in text or "\u00a0" in text or "\u2009" in text or "\u202f" in text:
        return _SPACE_RUNS.sub(" ", text)
    return text


def _tidy(text: str) -> str:
    """List/indent markers and rules off, spacing collapsed, lines trimmed, blank runs cut."""
    if text[:1] in "*#:;" or "\n*" in text or "\n#" in text or "\n:" in text or "\n;" in text:
        text = _LIST_MARKERS.sub("", text)
    if "----" in text:
        text = _HRULES.sub("", text)
    text = _collapse_spaces(text)
    if " \n" in text or "\n " in text or text[:1] == " " or text[-1:] == " ":
        text = _LINE_EDGE_SPACES.sub("", text)
    if "(" in text:
        text = _EMPTY_PARENS.sub("", text)
        if "( " in text:  # "({{Flagicon|ENG}} Inglaterra)": the icon went, its space stays
            text = _SPACE_AFTER_PAREN.sub("(", text)
    text = _SPACE_BEFORE_PUNCT.sub(_FIRST_GROUP, text)
    if " \n" in text or "\n " in text:
        text = _LINE_EDGE_SPACES.sub("", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _lines_to_sections(text: str) -> list[Section]:
    """Split at heading lines; tidy each section's text with whole-text passes."""
    sections: list[Section] = []
    bounds = [(m.start(), m.end(), len(m.group(1)), _SPACES.sub(" ", m.group(2)).strip(" ="))
              for m in _HEADING_LINE.finditer(text)]
    starts = [(0, 0, 0, "")] + bounds
    for i, (_, body_start, level, heading) in enumerate(starts):
        body_end = bounds[i][0] if i < len(bounds) else len(text)
        if heading.casefold() in SKIPPED_SECTIONS:
            continue
        body = _tidy(text[body_start:body_end])
        if body or i == 0:
            sections.append(Section(heading, level, body))
    return sections


def _link_targets(raw: list[str]) -> list[str]:
    """Article titles linked to, in link order, once each: ``[[brasil#História|...]]`` ->
    ``Brasil``; links to a section of the page itself (``[[#Notas]]``) are not links out."""
    titles: dict[str, None] = {}
    for target in raw:
        title = normalize_title(target.split("#", 1)[0])
        if title:
            titles[title] = None
    return list(titles)


def _may_have_leftovers(text: str) -> bool:
    return (any(token in text for token in ("{{", "}}", "[[", "]]", "{|", "\n|", "\n |"))
            or text[:1] == "|")


def parse_wikitext(text: str, title: str = "", tables: str = "text") -> ParsedPage:
    """Clean one page's wikitext into sections, infobox fields and categories."""
    ctx = _Context(title, tables)
    text = text.replace("\r\n", "\n")
    text = _strip_elements(text)
    if "__" in text:
        text = _MAGIC_WORD.sub("", text)
    text = _expand_templates(text, ctx)
    text = _expand_links(text, ctx)
    text = _expand_tables(text, ctx) if "{|" in text else text
    leftovers = len(_LEFTOVER.findall(text)) if _may_have_leftovers(text) else 0
    if leftovers:
        # Unbalanced markup the passes could not pair (before entities are decoded, so
        # <nowiki> content stays literal).
        text = _LEFTOVER.sub("", text)
    text = _finish_inline(text, "\n")
    sections = _lines_to_sections(text)
    return ParsedPage(
        sections=sections,
        infobox_type=ctx.infobox_type,
        infobox=ctx.infobox,
        categories=ctx.categories,
        links=_link_targets(ctx.links),
        is_disambiguation=ctx.disambiguation or title.endswith("(desambiguação)"),
        leftover_markup=leftovers,
        dropped_templates=ctx.dropped,
    )

"""Question files: JSONL, CSV and YAML, validated record by record.

One question per JSONL line, CSV row or YAML list item, with ``question`` (required), ``id``,
``reference`` (a string or a list of acceptable answers), ``source_title`` (the article that
holds the answer), ``answerable`` and ``type``; any other field is kept in ``extra`` and passed
through to the results. A bad record is reported with the file and line (and CSV row / YAML
item) and skipped; the rest of the file still loads. A file with no valid question at all, a
missing or empty file and an unknown extension are errors (:class:`QuestionFileError`).

In CSV files a ``reference`` (or ``source_titles``) cell holds several answers separated by
``|`` ("Deodoro da Fonseca | marechal Deodoro") or a JSON list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.io import BadLine, InputError

log = logging.getLogger(__name__)

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv",
            ".yaml": "yaml", ".yml": "yaml"}
KNOWN_FIELDS = ("id", "question", "reference", "source_title", "answerable", "type")
DEFAULT_MAX_CHARS = 2000
_TRUE = {"true", "yes", "sim", "1", "y", "s", "verdadeiro"}
_FALSE = {"false", "no", "não", "nao", "0", "n", "falso"}
_LOGGED_PROBLEMS = 20


class QuestionFileError(InputError):
    """The question file cannot be used at all (missing, empty, unreadable, no valid record)."""


class RecordError(ValueError):
    """One record is invalid; the message says why (the caller adds file and line)."""


@dataclass
class Question:
    """One question with what is needed to score its answers."""

    id: str
    question: str
    reference: list[str] = field(default_factory=list)
    source_title: str | None = None
    # True / False as given; when absent: True if there is a reference, False for
    # type "unanswerable", otherwise None (an open question: nothing to score against).
    answerable: bool | None = None
    type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def source_titles(self) -> list[str]:
        """``source_title`` and the ``source_titles`` of multi-article questions, deduplicated."""
        titles = [self.source_title] if self.source_title else []
        titles += [t for t in self.extra.get("source_titles") or [] if isinstance(t, str)]
        return list(dict.fromkeys(t for t in titles if t))

    def to_dict(self) -> dict[str, Any]:
        """The question part of a results record."""
        return {"question_id": self.id, "question": self.question,
                "reference": list(self.reference), "source_title": self.source_title,
                "answerable": self.answerable, "type": self.type, "extra": dict(self.extra)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Question:
        """The question of a results record (``question_id``) or of a question-file record."""
        data = dict(record.get("extra") or {})
        data.update({k: record[k] for k in KNOWN_FIELDS if k in record})
        if "question_id" in record:
            data["id"] = record["question_id"]
        return parse_question(data)


@dataclass
class QuestionFile:
    """The valid questions of a file, the records skipped and the warnings about kept ones."""

    path: str
    questions: list[Question]
    problems: list[BadLine] = field(default_factory=list)
    warnings: list[BadLine] = field(default_factory=list)

    def __iter__(self) -> Iterator[Question]:
        return iter(self.questions)

    def __len__(self) -> int:
        return len(self.questions)


# -- one record ---------------------------------------------------------------------------------

def _text(value: Any, name: str) -> str | None:
    """A text field: strings stripped, numbers (YAML years) as text, empty → None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RecordError(f"{name} must be text, got {type(value).__name__} {value!r}"[:200])
    text = str(value).strip()
    return text or None


def _text_list(value: Any, name: str) -> list[str]:
    """A string or a list of strings; in CSV cells ``a | b`` or a JSON list."""
    if value is None:
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                value = json.loads(stripped)
            except ValueError:
                raise RecordError(f"{name} looks like a JSON list but is not valid JSON") from None
        else:
            value = stripped.split("|") if "|" in stripped else [stripped]
    if not isinstance(value, (list, tuple)):
        value = [value]
    items = []
    for i, item in enumerate(value):
        text = _text(item, f"{name}[{i}]")
        if text:
            items.append(text)
    return list(dict.fromkeys(items))


def _flag(value: Any, name: str) -> bool | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().casefold() in _TRUE | _FALSE:
        return value.strip().casefold() in _TRUE
    raise RecordError(f"{name} must be true or false, got {value!r}"[:200])


def auto_id(question: str) -> str:
    """A stable id for a question without one: the same text gets the same id in every run."""
    return "q" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:10]


def parse_question(raw: Mapping[str, Any], max_chars: int | None = None,
                   long: Literal["truncate", "refuse"] = "truncate") -> Question:
    """Validate one record. Raises :class:`RecordError`; a question longer than ``max_chars``
    is refused or cut at a word boundary (``extra["truncated_from"]`` records the length)."""
    if not isinstance(raw, Mapping):
        raise RecordError(f"expected a mapping with a 'question' field, got {type(raw).__name__}")
    if "question" not in raw:
        raise RecordError("no 'question' field"
                          + (f" (fields: {', '.join(map(str, raw))})" if raw else ""))
    question = raw["question"]
    if question is None:
        raise RecordError("empty question")
    if not isinstance(question, str):
        raise RecordError(f"question must be text, got {type(question).__name__}")
    question = question.strip()
    if not question:
        raise RecordError("empty question")
    extra = {k: v for k, v in raw.items() if k not in KNOWN_FIELDS}
    if max_chars is not None and len(question) > max_chars:
        if long == "refuse":
            raise RecordError(f"question is {len(question)} characters long (limit {max_chars})")
        cut = question[:max_chars]
        space = cut.rfind(" ")
        extra["truncated_from"] = len(question)
        question = (cut[:space] if space > max_chars // 2 else cut).rstrip()
    qid = raw.get("id")
    if isinstance(qid, float) and qid.is_integer():
        qid = int(qid)
    if isinstance(qid, float):
        raise RecordError(f"id must be text or an integer, got {qid!r}")
    qid = _text(qid, "id") or auto_id(question)
    reference = _text_list(raw.get("reference"), "reference")
    answerable = _flag(raw.get("answerable"), "answerable")
    qtype = _text(raw.get("type"), "type")
    if answerable is False and reference:
        raise RecordError("answerable is false but a reference answer is given")
    if answerable is None:
        answerable = True if reference else (False if qtype == "unanswerable" else None)
    if "source_titles" in extra:
        extra["source_titles"] = _text_list(extra["source_titles"], "source_titles")
    return Question(id=qid, question=question, reference=reference,
                    source_title=_text(raw.get("source_title"), "source_title"),
                    answerable=answerable, type=qtype, extra=extra)


# -- readers: (line, where, record or error) -----------------------------------------------------

def _decode(raw: bytes) -> tuple[str, dict[int, str]]:
    """UTF-8 text with each invalid byte replaced by U+FFFD, and {line: what was wrong}."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), {}
    except UnicodeDecodeError:
        pass
    parts, bad, pos = [], {}, 0
    while True:
        try:
            parts.append(raw[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            at = pos + exc.start
            parts.append(raw[pos:at].decode("utf-8") + "\ufffd")
            line = raw.count(b"\n", 0, at) + 1
            col = at - (raw.rfind(b"\n", 0, at) + 1) + 1
            bad.setdefault(line, f"invalid UTF-8: byte 0x{raw[at]:02X} at line {line}, "
                                 f"byte {col} of the line")
            pos = pos + exc.end
    return "".join(parts), bad


def _bad_in(lines: range, bad: dict[int, str]) -> str | None:
    return next((bad[n] for n in lines if n in bad), None)


def _read_jsonl(path: Path, raw: bytes) -> Iterator[tuple[int, str, Any]]:
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue
        text, bad = _decode(line)
        if bad:
            yield lineno, "", RecordError(bad[1].replace("at line 1, ", "at "))
            continue
        try:
            yield lineno, "", json.loads(text)
        except ValueError as exc:
            yield lineno, "", RecordError(f"invalid JSON: {exc}")


def _read_csv(path: Path, raw: bytes) -> Iterator[tuple[int, str, Any]]:
    text, bad = _decode(raw)
    first = text.split("\n", 1)[0]
    if path.suffix.lower() == ".tsv":
        delimiter = "\t"
    else:  # ';' is what spreadsheets write in Portuguese locales
        delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise QuestionFileError(f"{path}:1: cannot read the CSV header: {exc}") from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1 and h})
    if dupes:
        raise QuestionFileError(f"{path}:1: repeated column(s) {', '.join(dupes)}")
    if "question" not in header:
        raise QuestionFileError(f"{path}:1: the header has no 'question' column "
                                f"(columns: {', '.join(h or '(empty)' for h in header)})")
    if bad.get(1):
        raise QuestionFileError(f"{path}: header: {bad[1]}")
    row_no, last_line = 0, reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise QuestionFileError(f"{path}:{reader.line_num}: unreadable CSV: {exc}") from None
        start, last_line = last_line + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        row_no += 1
        where = f"row {row_no}"
        problem = _bad_in(range(start, last_line + 1), bad)
        if problem:
            yield start, where, RecordError(problem)
        elif len(row) > len(header):
            yield start, where, RecordError(f"{len(row)} fields but the header has {len(header)}")
        else:
            cells = dict(zip(header, row, strict=False))
            cells.pop("", None)
            yield start, where, {k: (v if v.strip() else None) for k, v in cells.items()}


def _read_yaml(path: Path, raw: bytes) -> Iterator[tuple[int, str, Any]]:
    import yaml

    text, bad = _decode(raw)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise QuestionFileError(f"{where}: invalid YAML: {problem}") from None
    if root is None:
        return
    if isinstance(root, yaml.MappingNode):  # also accept {questions: [...]}
        for key, value in root.value:
            if key.value == "questions":
                root = value
                break
    if not isinstance(root, yaml.SequenceNode):
        raise QuestionFileError(f"{path}:{root.start_mark.line + 1}: expected a list of questions "
                                "(or a mapping with a 'questions' list)")
    loader = yaml.SafeLoader("")
    for n, node in enumerate(root.value, start=1):
        start = node.start_mark.line + 1
        end = node.end_mark.line + (1 if node.end_mark.column > 0 else 0)
        where = f"item {n}"
        problem = _bad_in(range(start, max(start, end) + 1), bad)
        if problem:
            yield start, where, RecordError(problem)
            continue
        try:
            yield start, where, loader.construct_document(node)
        except yaml.YAMLError as exc:
            yield start, where, RecordError(f"invalid YAML value: {exc}")


# -- the file -----------------------------------------------------------------------------------

def load_questions(path: str | Path, max_chars: int | None = DEFAULT_MAX_CHARS,
                   long: Literal["truncate", "refuse"] = "truncate") -> QuestionFile:
    """Read and validate a question file (.jsonl/.ndjson, .csv/.tsv, .yaml/.yml).

    Bad records (invalid JSON or UTF-8, no or empty question, wrong types, duplicate ids) are
    skipped and listed in ``problems`` with file and line; each is logged as a warning.
    Questions longer than ``max_chars`` are cut at a word boundary with a warning, or refused
    with ``long="refuse"``. Raises :class:`QuestionFileError` when nothing usable is left.
    """
    if long not in ("truncate", "refuse"):
        raise ValueError(f"long must be 'truncate' or 'refuse', not {long!r}")
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise QuestionFileError(f"{path}: unknown question file type {path.suffix or '(none)'!r}; "
                                f"use one of {', '.join(SUFFIXES)}")
    if not path.exists():
        raise QuestionFileError(f"{path}: question file not found")
    if not path.is_file():
        raise QuestionFileError(f"{path}: not a file")
    raw = path.read_bytes()
    if not raw.strip():
        raise QuestionFileError(f"{path}: the question file is empty")
    if kind == "jsonl":
        records = _read_jsonl(path, raw)
    elif kind == "csv":
        records = _read_csv(path, raw)
    else:
        records = _read_yaml(path, raw)

    result = QuestionFile(str(path), [])
    seen: dict[str, int] = {}
    for line, where, rec in records:
        prefix = f"{where}: " if where else ""
        try:
            if isinstance(rec, RecordError):
                raise rec
            q = parse_question(rec, max_chars=max_chars, long=long)
            if q.id in seen:
                raise RecordError(f"duplicate id {q.id!r} (first at line {seen[q.id]})")
        except RecordError as exc:
            result.problems.append(BadLine(str(path), line, prefix + str(exc)))
            continue
        seen[q.id] = line
        if "truncated_from" in q.extra:
            result.warnings.append(BadLine(
                str(path), line, f"{prefix}question {q.id!r} cut from {q.extra['truncated_from']} "
                                 f"to {len(q.question)} characters (limit {max_chars})"))
        result.questions.append(q)

    for n, item in enumerate(result.problems + result.warnings):
        if n == _LOGGED_PROBLEMS:
            log.warning("%s: ... and %d more problem(s)", path,
                        len(result.problems) + len(result.warnings) - n)
            break
        log.warning("%s", item)
    if not result.questions:
        if not result.problems:
            raise QuestionFileError(f"{path}: no questions in the file")
        shown = "; ".join(f"line {p.line}: {p.reason}" for p in result.problems[:3])
        more = f" (and {len(result.problems) - 3} more)" if len(result.problems) > 3 else ""
        raise QuestionFileError(f"{path}: no valid question; {shown}{more}")
    if result.problems:
        log.warning("%s: %d question(s) loaded, %d bad record(s) skipped", path,
                    len(result.questions), len(result.problems))
    return result


def stratified_sample(questions: Sequence[Question], n: int, seed: int = 0) -> list[Question]:
    """``n`` questions spread evenly over the question types, the same ones every time.

    Within each type the order is a stable hash of (seed, id); types take turns, so a small
    sample still has lead, section, infobox, table, multi-article and unanswerable questions.
    The chosen questions keep the file's order.
    """
    by_type: dict[str, list[Question]] = {}
    for q in questions:
        by_type.setdefault(q.type or "", []).append(q)
    for group in by_type.values():
        group.sort(key=lambda q: hashlib.sha256(f"{seed}:{q.id}".encode()).hexdigest())
    chosen: set[str] = set()
    while len(chosen) < min(n, len(questions)):
        for group in by_type.values():
            if group and len(chosen) < n:
                chosen.add(group.pop(0).id)
    return [q for q in questions if q.id in chosen]

"""Instruction records to training tokens: the prompt masked, the response and EOS learned.

Every example is ``tokens(prompt) + tokens(response) + [EOS]``, with labels ``-100`` over the
prompt, so only the answer and the decision to stop are learned. The prompt and the response
are tokenized separately, exactly as at inference (where the prompt is tokenized alone and
the model continues it), so training sees the same prompt tokens inference will.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.io import BadLine, InputError, iter_jsonl, sha256_file

log = logging.getLogger(__name__)

IGNORE = -100
TRAIN_FILE = "instructions.train.jsonl"
VAL_FILE = "instructions.val.jsonl"
MAX_REPORTED = 20  # bad lines named in the report (all are counted)


@dataclass
class Split:
    """The records of one split and where they came from."""

    name: str
    path: str
    records: list[dict[str, Any]]
    read: int = 0
    skipped: int = 0


@dataclass
class DataReport:
    """What was read, skipped, truncated and used: goes into summary.json."""

    files: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)
    truncated_prompt: dict[str, int] = field(default_factory=dict)
    truncated_response: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    response_tokens: dict[str, int] = field(default_factory=dict)
    val_source: str = "file"
    selection: dict[str, Any] = field(default_factory=dict)  # finetune.select and what it covered
    reading: dict[str, Any] = field(default_factory=dict)  # the reading tasks built, if any

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _check_record(rec: dict[str, Any]) -> str | None:
    """Why a record cannot be trained on, or None."""
    for key in ("instruction", "output"):
        value = rec.get(key)
        if value is None:
            return f"record has no {key!r}"
        if not isinstance(value, str) or not value.strip():
            return f"record's {key!r} is empty or not a string"
    if not isinstance(rec.get("input") or "", str):
        return "record's 'input' is not a string"
    return None


def read_split(name: str, path: Path, report: DataReport) -> Split:
    """Read one JSONL file; bad lines and unusable records are skipped, counted and named."""
    if not path.is_file():
        raise InputError(f"{path}: data file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: data file is empty")
    split = Split(name, str(path), [])

    def bad(line: BadLine) -> None:
        split.skipped += 1
        if len(report.problems) < MAX_REPORTED:
            report.problems.append(str(line))

    def bad_json(line: BadLine) -> None:
        split.read += 1
        bad(line)

    for lineno, rec in iter_jsonl(path, on_error=bad_json):
        split.read += 1
        reason = _check_record(rec)
        if reason:
            bad(BadLine(str(path), lineno, reason))
            continue
        split.records.append(rec)
    if split.skipped:
        log.warning("%s: skipped %d of %d records (e.g. %s)", path, split.skipped, split.read,
                    report.problems[0] if report.problems else "")
    if not split.records:
        raise InputError(f"{path}: no usable records ({split.skipped} skipped"
                         f"{': ' + report.problems[0] if report.problems else ''})")
    report.files[name] = str(path)
    report.sha256[name] = sha256_file(path)
    report.read[name] = split.read
    report.skipped[name] = split.skipped
    return split


def _stable_key(rec: dict[str, Any]) -> str:
    ident = rec.get("id") or (rec.get("instruction", "") + "\x00" + rec.get("input", "") + "\x00"
                               + rec.get("output", ""))
    return hashlib.sha256(str(ident).encode("utf-8")).hexdigest()


def balanced_subset(records: Sequence[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """At most ``limit`` records, taking task types in turn, each in a stable hashed order."""
    if limit is None or limit >= len(records):
        return list(records)
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_task[str(rec.get("task", ""))].append(rec)
    queues = [sorted(group, key=_stable_key) for _, group in sorted(by_task.items())]
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < limit:
        queue = queues[i % len(queues)]
        pos = i // len(queues)
        if pos < len(queue):
            out.append(queue[pos])
        i += 1
        if i > len(queues) * max(len(q) for q in queues):
            break
    return out


def _fact_groups(records: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Records grouped by the fact they ask (all its phrasings together), groups in a stable
    hashed order, task types taking turns."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(str(rec.get("fact") or rec.get("id") or _stable_key(rec)), []).append(rec)
    by_task: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for group in groups.values():
        by_task[str(group[0].get("task", ""))].append(group)
    queues = [sorted(g, key=lambda grp: _stable_key(grp[0])) for _, g in sorted(by_task.items())]
    out: list[list[dict[str, Any]]] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def select_records(records: Sequence[dict[str, Any]], limit: int | None, mode: str = "tasks",
                   references: Sequence[Sequence[str]] = (), keep_accents: bool = False,
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """At most ``limit`` training records chosen by ``mode`` (see ``finetune.select``), and a
    report: how many questions have their answer among the chosen outputs."""
    if mode == "tasks":
        return balanced_subset(records, limit), {"mode": mode}
    limit = len(records) if limit is None else limit
    chosen: list[dict[str, Any]] = []
    taken: set[int] = set()

    def take(group: list[dict[str, Any]]) -> None:
        for rec in group:
            if len(chosen) < limit and id(rec) not in taken:
                taken.add(id(rec))
                chosen.append(rec)

    groups = _fact_groups(records)
    covered = 0
    if mode == "questions" and references:
        from core.exposure import ReferenceMatcher

        matcher = ReferenceMatcher({str(i): list(r) for i, r in enumerate(references)}, keep_accents)
        per_question: list[list[list[dict[str, Any]]]] = [[] for _ in references]
        short_first = {"fact": 0, "infobox": 0, "table": 0, "definition": 1}
        for group in groups:
            for qi in matcher.match(str(group[0].get("output") or "")):
                per_question[int(matcher.ids[qi])].append(group)
        for lst in per_question:
            lst.sort(key=lambda g: short_first.get(str(g[0].get("task")), 2))
        covered = sum(bool(lst) for lst in per_question)
        depth = 0
        while len(chosen) < limit and any(depth < len(lst) for lst in per_question):
            for lst in per_question:  # each question in turn: one more fact that answers it
                if depth < len(lst):
                    take(lst[depth])
            depth += 1
    for group in groups:
        if len(chosen) >= limit:
            break
        take(group)
    report = {"mode": mode, "questions": len(references), "questions_with_answer_in_data": covered,
              "facts": len({str(r.get("fact") or r.get("id")) for r in chosen})}
    return chosen, report


def fit_token_budget(records: Sequence[dict[str, Any]], examples: Sequence[Any], budget: int,
                     ) -> tuple[list[int], dict[str, Any]]:
    """Which records (indexes, in their order) fit ``budget`` tokens, and a report.

    ``records`` come in the order of ``finetune.select`` (the facts that answer the questions,
    then the other facts, each with all its phrasings), so a prefix is the best coverage the
    budget buys. Reading tasks keep their share of the records: they take the budget's tokens
    in proportion first (a reading record is ~7x a fact's tokens, cut last), the rest goes to
    the other records in order; a record that does not fit is skipped and the next tried.
    """
    lengths = [len(e.input_ids) for e in examples]
    reading = [i for i, r in enumerate(records) if r.get("task") == "reading"]
    others = [i for i, r in enumerate(records) if r.get("task") != "reading"]
    share = len(reading) / len(records) if records else 0.0
    kept: list[int] = []
    spent = 0
    reading_budget = int(budget * share) if others else budget
    for i in reading:
        if spent + lengths[i] <= reading_budget:
            kept.append(i)
            spent += lengths[i]
    for i in others:
        if spent + lengths[i] <= budget:
            kept.append(i)
            spent += lengths[i]
    kept.sort()
    report = {"max_train_tokens": budget, "records_before": len(records), "records_kept": len(kept),
              "tokens_before": sum(lengths), "tokens_kept": spent,
              "reading_kept": sum(1 for i in kept if records[i].get("task") == "reading")}
    return kept, report


def load_splits(data: str | Path, *, val_fraction: float = 0.1, tasks: Sequence[str] | None = None,
                max_train: int | None = None, max_val: int | None = None, select: str = "tasks",
                ) -> tuple[list[dict], list[dict], DataReport]:
    """Train and val records from an ingest folder or a single JSONL file.

    A folder must hold ``instructions.train.jsonl`` (and usually ``instructions.val.jsonl``);
    a file ``X.train.jsonl`` takes its sibling ``X.val.jsonl`` when there is one. Without a val
    file, ``val_fraction`` of the records is held out by a stable hash of their id. With
    ``select`` other than "tasks", the train split is returned whole, for :func:`select_records`.
    """
    data = Path(data)
    report = DataReport()
    if data.is_dir():
        train_path, val_path = data / TRAIN_FILE, data / VAL_FILE
        if not train_path.is_file():
            raise InputError(f"{data}: no {TRAIN_FILE} (run `compara ingest` first, or pass a "
                             "JSONL file)")
    elif data.is_file():
        train_path = data
        name = data.name
        val_path = data.with_name(name.replace(".train.", ".val.")) if ".train." in name else None
    else:
        raise InputError(f"{data}: no such file or folder")
    train = read_split("train", train_path, report).records
    if val_path is not None and val_path.is_file() and val_path.stat().st_size > 0:
        val = read_split("val", val_path, report).records
    else:
        report.val_source = f"{val_fraction:.0%} of {train_path.name} (stable hash)"
        cut = int(val_fraction * 2**32)
        held = [int(_stable_key(r)[:8], 16) < cut for r in train]
        val = [r for r, h in zip(train, held, strict=True) if h]
        train = [r for r, h in zip(train, held, strict=True) if not h]
        if not train:  # tiny inputs: keep at least one record on each side
            train, val = val[1:] or val, val[:1]
        elif not val:
            val = [train.pop()] if len(train) > 1 else list(train)
    if tasks:
        wanted = set(tasks)
        train = [r for r in train if r.get("task") in wanted]
        val = [r for r in val if r.get("task") in wanted]
        if not train:
            raise InputError(f"{train_path}: no records of the task types {sorted(wanted)}")
    if not val:  # the val file held none of these tasks: hold some training records out
        report.val_source = f"{val_fraction:.0%} of {train_path.name} (stable hash)"
        cut = int(val_fraction * 2**32)
        val = [r for r in train if int(_stable_key(r)[:8], 16) < cut] or train[-1:]
        train = [r for r in train if r not in val] or train
    if select == "tasks":
        train = balanced_subset(train, max_train)
    val = balanced_subset(val, max_val)
    report.used = {"train": len(train), "val": len(val)}
    return train, val, report


# -- tokens -----------------------------------------------------------------------------------

@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    truncated: str | None = None  # None, "prompt" or "response"


def encode(tokenizer, template, record: dict[str, Any], max_length: int) -> Example:
    """One training example: prompt tokens (masked) + response tokens + EOS (learned).

    Too long for ``max_length``: the middle of the prompt is cut first (keeping the template's
    head and the end of the prompt with the response marker), down to half of ``max_length``;
    if the response alone is still too long it is cut too, and then carries no EOS (the answer
    does not end there, so the model must not learn to stop there).
    """
    prompt, response = template.render_record(record)
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if p and p[-1] == tokenizer.eos_token_id:  # a tokenizer that closes every text with EOS
        p = p[:-1]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    truncated = None
    if len(p) + len(r) > max_length:
        truncated = "prompt"
        keep = max(max_length - len(r), min(len(p), max_length // 2))
        if keep < len(p):
            tail = keep // 2
            p = p[: keep - tail] + p[len(p) - tail:]
        if len(p) + len(r) > max_length:
            truncated = "response"
            r = r[: max_length - len(p)]
    return Example(p + r, [IGNORE] * len(p) + r, truncated)


def encode_all(tokenizer, template, records: Sequence[dict[str, Any]], max_length: int,
               split: str, report: DataReport) -> list[Example]:
    from core.logs import progress

    examples = [encode(tokenizer, template, rec, max_length)
                for rec in progress(records, desc=f"tokenizing {split}", unit="ex", leave=False)]
    cut_p = sum(e.truncated == "prompt" for e in examples)
    cut_r = sum(e.truncated == "response" for e in examples)
    report.truncated_prompt[split] = cut_p
    report.truncated_response[split] = cut_r
    report.tokens[split] = sum(len(e.input_ids) for e in examples)
    report.response_tokens[split] = sum(sum(t != IGNORE for t in e.labels) for e in examples)
    if cut_p or cut_r:
        log.warning("%s: %d of %d examples longer than max_length=%d were truncated (%d in the "
                    "prompt only, %d also in the response, which then has no EOS)", split,
                    cut_p + cut_r, len(examples), max_length, cut_p, cut_r)
    return examples


class ExampleDataset:
    """A torch-style map dataset of encoded examples."""

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        ex = self.examples[i]
        return {"input_ids": ex.input_ids, "labels": ex.labels}

    @property
    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.examples]


class PackedCollator:
    """A batch as ONE row without padding: examples end to end, positions restarting at 0.

    transformers reads the restarting ``position_ids`` (with no attention mask) as packed
    sequences and masks attention block-diagonally, so no example sees another; no pad token
    is ever computed.
    """

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        ids, labels, pos = [], [], []
        for f in features:
            ids.extend(f["input_ids"])
            # The first token of each example is never a target of the previous one.
            labels.extend([IGNORE, *f["labels"][1:]])
            pos.extend(range(len(f["input_ids"])))
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([pos])}


class PaddedCollator:
    """Right-padded batches with an attention mask (pad labels -100)."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = [f["input_ids"] + [self.pad] * (width - len(f["input_ids"])) for f in features]
        labels = [f["labels"] + [IGNORE] * (width - len(f["labels"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask)}

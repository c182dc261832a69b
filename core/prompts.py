"""The one source of prompts: instruction template (training + inference) and the RAG prompt.

Training examples, base and fine-tuned prompts, and retrieval prompts are all rendered here,
from JSON templates in ``core/templates/``. An adapter stores the template it was trained
with (:meth:`PromptTemplate.save`) and inference loads that copy, so the prompts match byte
for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TEMPLATES_DIR = Path(__file__).parent / "templates"
DEFAULT_TEMPLATE = "alpaca-pt"
DEFAULT_RAG_TEMPLATE = "rag-pt"
TEMPLATE_FILENAME = "prompt_template.json"


def _load_json(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if not path.suffix:
        path = TEMPLATES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATES_DIR.glob("*.json"))
        raise FileNotFoundError(
            f"prompt template {str(name_or_path)!r} not found (a path to a JSON file, or one of: "
            f"{', '.join(known)})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    return data, str(path)


@dataclass(frozen=True)
class PromptTemplate:
    """Alpaca-style instruction template."""

    name: str
    prompt_input: str
    prompt_no_input: str
    response_split: str
    description: str = ""

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_TEMPLATE) -> PromptTemplate:
        data, where = _load_json(name_or_path)
        missing = {"name", "prompt_input", "prompt_no_input", "response_split"} - set(data)
        if missing:
            raise ValueError(f"{where}: template lacks field(s) {', '.join(sorted(missing))}")
        tpl = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        for field, needed in (("prompt_input", ("{instruction}", "{input}")),
                              ("prompt_no_input", ("{instruction}",))):
            for placeholder in needed:
                if placeholder not in getattr(tpl, field):
                    raise ValueError(f"{where}: {field} lacks the placeholder {placeholder}")
        return tpl

    @classmethod
    def from_dir(cls, folder: str | Path) -> PromptTemplate:
        """The template stored in an adapter/run folder."""
        return cls.load(Path(folder) / TEMPLATE_FILENAME)

    def save(self, folder: str | Path) -> Path:
        from core.io import atomic_write_json

        path = Path(folder) / TEMPLATE_FILENAME
        atomic_write_json(path, asdict(self))
        return path

    @property
    def fingerprint(self) -> str:
        """A short hash of the exact template text (recorded in adapters and runs)."""
        blob = json.dumps(
            [self.prompt_input, self.prompt_no_input, self.response_split], ensure_ascii=False
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    @property
    def stop_markers(self) -> list[str]:
        """Where an answer ends: a new line that opens the template's next section.

        The sections begin with the marker in front of ``response_split`` (``###`` in
        ``### Resposta:``); a model that has finished its answer and carries on writing the
        template (``\n### Instrução:``, ``\n### Resposta:`` ...) has left its answer there.
        """
        import re

        marker = re.match(r"[^\w\s]+", self.response_split.strip())
        return ["\n" + (marker.group(0) if marker else self.response_split.strip())]

    def render(self, instruction: str, input: str = "") -> str:
        """The prompt, ending right where the model's response must begin."""
        instruction = instruction.strip()
        input = (input or "").strip()
        if input:
            return self.prompt_input.format(instruction=instruction, input=input)
        return self.prompt_no_input.format(instruction=instruction)

    def render_record(self, record: Mapping[str, Any]) -> tuple[str, str]:
        """(prompt, response) of an instruction record (``instruction``, ``input``, ``output``)."""
        return self.render(record["instruction"], record.get("input") or ""), record["output"].strip()


@dataclass(frozen=True)
class RagTemplate:
    """How retrieved passages and the question fill the instruction template."""

    name: str
    instruction: str
    passage: str
    passage_no_section: str
    passage_separator: str
    input: str
    abstain: str
    description: str = ""

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_RAG_TEMPLATE) -> RagTemplate:
        data, where = _load_json(name_or_path)
        missing = set(cls.__dataclass_fields__) - {"description"} - set(data)
        if missing:
            raise ValueError(f"{where}: RAG template lacks field(s) {', '.join(sorted(missing))}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def format_passages(self, passages: Sequence[Mapping[str, Any]]) -> str:
        parts = []
        for n, p in enumerate(passages, start=1):
            section = (p.get("section") or "").strip()
            tpl = self.passage if section else self.passage_no_section
            parts.append(tpl.format(n=n, title=p.get("title", ""), section=section,
                                    text=(p.get("text") or "").strip()))
        return self.passage_separator.join(parts)

    def fill(self, question: str, passages: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
        """(instruction, input) for the instruction template."""
        instruction = self.instruction.format(abstain=self.abstain)
        body = self.input.format(passages=self.format_passages(passages), question=question.strip())
        return instruction, body

    def render(self, template: PromptTemplate, question: str,
               passages: Sequence[Mapping[str, Any]]) -> str:
        """The full RAG prompt through the instruction template."""
        return template.render(*self.fill(question, passages))

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

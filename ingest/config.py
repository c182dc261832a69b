"""Settings of `compara ingest`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compara.configbase import ConfigBase, ConfigError, opt

TASKS = ("definition", "summary", "section", "infobox", "table", "passage_title")


@dataclass
class InstructionConfig(ConfigBase):
    """How the instruction set (the fine-tuning data) is derived from the articles."""

    tasks: list[str] = opt(list(TASKS), "Task types to generate: " + ", ".join(TASKS) + ".")
    paraphrases: int = opt(
        3, "Phrasings generated for each fact question (models absorb a fact only when they "
           "see it several ways).")
    template: str = opt("alpaca-pt", "Prompt template (name in compara/templates or a JSON path).")
    min_output_chars: int = opt(3, "Drop records whose answer is shorter than this.")
    max_output_chars: int = opt(
        900, "Answers longer than this are cut at the last sentence end before it.")
    max_input_chars: int = opt(1500, "Inputs (passages) longer than this are cut likewise.")
    max_sections: int = opt(20, "At most this many sections per article become section tasks.")
    max_table_rows: int = opt(30, "At most this many rows per table become table-fact tasks.")
    val_fraction: float = opt(0.08, "Share of records in the validation split (stable hash).")
    split_salt: str = opt("compara", "Salt of the split hash; change it to draw another split.")

    def validate(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ConfigError(f"instructions.tasks: unknown task(s) {unknown}; known: {list(TASKS)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("instructions.val_fraction must be in [0, 1)")
        if self.paraphrases < 1:
            raise ConfigError("instructions.paraphrases must be >= 1")
        if self.min_output_chars > self.max_output_chars:
            raise ConfigError("instructions.min_output_chars must be <= max_output_chars")


@dataclass
class IngestConfig(ConfigBase):
    """Reading the dump and cleaning the pages."""

    workers: int = opt(1, "Processes that clean pages beside the one reading the dump (0 = clean "
                          "in the reading process, for debugging). Output order is the dump's "
                          "whatever the count.")
    batch_pages: int = opt(64, "Pages sent to a worker at a time.")
    max_pages: int | None = opt(None, "Stop after this many pages of the dump (quick runs).")
    min_article_chars: int = opt(
        200, "Articles whose clean text is shorter than this are skipped as stubs.")
    max_page_bytes: int = opt(
        8_000_000, "Pages with more wikitext than this are skipped with a warning.")
    namespaces: list[int] = opt([0], "Namespaces kept as articles (0 = the main namespace).")
    skip_disambiguation: bool = opt(True, "Skip disambiguation pages.")
    tables: Literal["text", "drop"] = opt(
        "text", "Render wikitables as 'Column: value; ...' lines (text) or drop them.")
    base_url: str = opt("https://pt.wikipedia.org/wiki/", "Prefix of article URLs.")
    instructions: InstructionConfig = opt(InstructionConfig, "Instruction-set generation.")

    def validate(self) -> None:
        if self.workers < 0:
            raise ConfigError("ingest.workers must be >= 0")
        if self.batch_pages < 1:
            raise ConfigError("ingest.batch_pages must be >= 1")
        if self.max_pages is not None and self.max_pages < 1:
            raise ConfigError("ingest.max_pages must be >= 1")

"""Settings of `compara ingest`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.configbase import ConfigBase, ConfigError, opt

TASKS = ("definition", "summary", "section", "infobox", "table", "fact", "passage_title")


@dataclass
class GeneratorConfig(ConfigBase):
    """Question/answer pairs written by a language model about passages of the articles, added
    to the instruction set as task "generated" (self-instruct style). Off unless ``model`` or
    ``endpoint`` is set; see docs/ingest.md, "Model-written questions"."""

    model: str | None = opt(
        None, "Causal LM that writes the questions, loaded in this process: a registry name "
              "(`compara models`), a local Hugging Face folder or a hub id. null = off.")
    revision: str | None = opt(None, "Hub revision (branch, tag or commit) of a hub id.")
    quantize: Literal["4bit", "8bit", "none"] = opt(
        "none", "Weights of the local model: none (the dtype), 4bit (NF4) or 8bit.")
    device: str = opt("auto", "Device of the local model: auto, cpu, cuda, cuda:N, mps.")
    batch_size: int = opt(4, "Passages the local model writes about at once.")
    endpoint: str | None = opt(
        None, "URL of an OpenAI-compatible server on your machine (vLLM, llama.cpp server), "
              "e.g. http://127.0.0.1:8000; used instead of `model`. null = off.")
    api: Literal["chat", "completions"] = opt(
        "chat", "Endpoint route: chat (POST /v1/chat/completions) or completions "
                "(POST /v1/completions, for base models).")
    api_model: str | None = opt(
        None, "The `model` field sent to the endpoint (vLLM: the served model name; "
              "null: not sent, the server's only model answers).")
    timeout_s: float = opt(120.0, "Seconds to wait for the endpoint's reply to one passage.")
    max_retries: int = opt(
        2, "Retries of a passage after a timeout or connection error; then it is skipped "
           "(and asked again on the next run).")
    questions_per_passage: int = opt(3, "Question/answer pairs asked for per passage.")
    passage_chars: int = opt(1200, "Passages are whole sentences of one section up to this size.")
    passages_per_article: int | None = opt(
        3, "At most this many passages per article, so a budget spreads over many articles "
           "(null = all).")
    max_passages: int | None = opt(
        None, "Budget: at most this many passages in all, taken in article order (null = all).")
    max_answer_words: int = opt(40, "Pairs whose answer is longer than this are rejected.")
    max_new_tokens: int = opt(512, "Tokens the model may write per passage.")
    temperature: float = opt(0.0, "0 = greedy (deterministic); above 0, seeded sampling.")
    seed: int = opt(0, "Seed of sampling (sent to the endpoint as `seed`).")

    @property
    def enabled(self) -> bool:
        return bool(self.model or self.endpoint)

    def validate(self) -> None:
        import re

        # Messages name the field only: from_dict prefixes the section's dotted name.
        if self.model and self.endpoint:
            raise ConfigError("set either model or endpoint, not both")
        if self.endpoint and not re.match(r"https?://[^/\s]+", self.endpoint):
            raise ConfigError(f"endpoint: {self.endpoint!r} is not an http(s) URL "
                              "(e.g. http://127.0.0.1:8000)")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"device: {self.device!r} is not auto, cpu, cuda, cuda:N "
                              "or mps")
        for name in ("batch_size", "questions_per_passage", "max_answer_words", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        for name in ("passages_per_article", "max_passages"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (or null: no limit)")
        if self.passage_chars < 100:
            raise ConfigError("passage_chars must be >= 100")
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s must be > 0")
        if self.max_retries < 0:
            raise ConfigError("max_retries must be >= 0")
        if self.temperature < 0:
            raise ConfigError("temperature must be >= 0 (0 = greedy)")


@dataclass
class InstructionConfig(ConfigBase):
    """How the instruction set (the fine-tuning data) is derived from the articles."""

    tasks: list[str] = opt(list(TASKS), "Task types to generate: " + ", ".join(TASKS) + ".")
    paraphrases: int = opt(
        3, "Phrasings generated for each fact question (models absorb a fact only when they "
           "see it several ways).")
    template: str = opt("alpaca-pt", "Prompt template (name in core/templates or a JSON path).")
    min_output_chars: int = opt(3, "Drop records whose answer is shorter than this.")
    max_output_chars: int = opt(
        900, "Answers longer than this are cut at the last sentence end before it.")
    max_input_chars: int = opt(1500, "Inputs (passages) longer than this are cut likewise.")
    max_sections: int = opt(
        500, "At most this many sections per article become section tasks (a cap for runaway "
             "pages; every section of a real article fits).")
    facts_per_sentence: int = opt(
        3, "Fact task: at most this many facts (a date, a quantity, a place, an agent, a name) "
           "asked per sentence, each in `paraphrases` phrasings.")
    fact_answer: Literal["sentence", "short"] = opt(
        "sentence", "Fact task: answer with the whole sentence (it carries every fact it holds, "
                    "in each phrasing) or with the span alone (\"Em 10 de maio de 1789.\").")
    max_fact_sentence_chars: int = opt(
        400, "Fact task: sentences longer than this are left to the passage records.")
    max_table_rows: int = opt(30, "At most this many rows per table become table-fact tasks.")
    val_fraction: float = opt(0.08, "Share of records in the validation split (stable hash).")
    split_salt: str = opt("compara", "Salt of the split hash; change it to draw another split.")
    generator: GeneratorConfig = opt(
        GeneratorConfig, "Model-written questions added to the set (off by default).")

    def validate(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ConfigError(f"instructions.tasks: unknown task(s) {unknown}; known: {list(TASKS)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("instructions.val_fraction must be in [0, 1)")
        if self.paraphrases < 1:
            raise ConfigError("instructions.paraphrases must be >= 1")
        if self.facts_per_sentence < 1:
            raise ConfigError("instructions.facts_per_sentence must be >= 1")
        if self.min_output_chars > self.max_output_chars:
            raise ConfigError("instructions.min_output_chars must be <= max_output_chars")


@dataclass
class SelectConfig(ConfigBase):
    """A part of the dump to keep: the union of the rules set here (none set = every article).
    The index and the instruction set are both made from the selected articles, so both paths
    of the comparison share them. See docs/ingest.md, "Selecting a part of the dump"."""

    categories: list[str] = opt(
        [], "Articles in these categories (\"Categoria:Rios de Portugal\", \"Category:...\" or "
            "the bare name; first letter and underscores as the wiki reads them).")
    category_depth: int = opt(
        0, "0 = articles directly in `categories`; N = also in their subcategories N levels "
           "down, from the dump's category pages (namespace 14).")
    titles: str | None = opt(
        None, "Text file of article titles, one a line (blank lines and lines starting with # "
              "ignored); a redirect's title selects its target. Relative: to the config file.")
    questions: str | None = opt(
        None, "Question file (.jsonl, .csv, .yaml): the articles its source_title / "
              "source_titles name. Relative: to the config file.")
    neighbours: int = opt(
        0, "With `questions`: also the first N articles each of those articles links to, in "
           "link order.")
    sample: int | None = opt(
        None, "N articles at random: the N with the smallest hash of (seed, title), the same "
              "whatever the dump order or the run (null = off).")
    seed: int = opt(0, "Seed of `sample`: another seed draws another set.")

    @property
    def active(self) -> bool:
        return bool(self.categories or self.titles or self.questions or self.sample)

    def validate(self) -> None:
        # Messages name the field only: from_dict prefixes the section's dotted name.
        if self.category_depth < 0:
            raise ConfigError("category_depth must be >= 0")
        if self.category_depth and not self.categories:
            raise ConfigError("category_depth is set but categories is empty")
        if self.neighbours < 0:
            raise ConfigError("neighbours must be >= 0")
        if self.neighbours and not self.questions:
            raise ConfigError("neighbours needs a questions file")
        if self.sample is not None and self.sample < 1:
            raise ConfigError("sample must be >= 1 (or null: off)")
        for i, name in enumerate(self.categories):
            if not isinstance(name, str) or not name.split(":", 1)[-1].strip():
                raise ConfigError(f"categories[{i}]: {name!r} is not a category name")

    def resolved(self, base: Path) -> SelectConfig:
        """``titles`` and ``questions`` relative to ``base`` (the config file's folder)."""
        from core.paths import under

        return self.replace(titles=under(base, self.titles), questions=under(base, self.questions))


@dataclass
class IngestConfig(ConfigBase):
    """Reading the dump and cleaning the pages."""

    workers: int = opt(1, "Processes that clean pages beside the one reading the dump (0 = clean "
                          "in the reading process, for debugging). Output order is the dump's "
                          "whatever the count.")
    batch_pages: int = opt(64, "Pages sent to a worker at a time.")
    reader_cleans: bool = opt(
        True, "With workers: the reading process also cleans a batch whenever every worker is "
              "busy (faster on an idle machine; on one whose cores other jobs keep busy it only "
              "adds ~10% CPU time).")
    max_pages: int | None = opt(None, "Stop after this many pages of the dump (quick runs).")
    max_hours: float | None = opt(
        None, "Refuse to start an ingest whose planned time exceeds this many hours: the dump's "
              "pages (counted over its first 16 MB, as `compara plan` counts them; capped at "
              "max_pages) at the sourced pages/s of ingest.workers, checked before anything is "
              "written (--force runs it anyway). null = no limit, and no estimate is made.")
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
    select: SelectConfig = opt(
        SelectConfig, "A part of the dump to keep (categories, titles, questions, a random "
                      "sample); off by default: every article.")

    def validate(self) -> None:
        if self.workers < 0:
            raise ConfigError("ingest.workers must be >= 0")
        if self.batch_pages < 1:
            raise ConfigError("ingest.batch_pages must be >= 1")
        if self.max_pages is not None and self.max_pages < 1:
            raise ConfigError("ingest.max_pages must be >= 1")
        if self.max_hours is not None and self.max_hours <= 0:
            raise ConfigError("ingest.max_hours must be > 0 (or null)")

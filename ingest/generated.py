"""Model-written questions for the instruction set (self-instruct style), off by default.

After the rule-based set is published, a language model reads passages of the articles (whole
sentences of one section, ``generator.passage_chars`` at most) and writes question/answer pairs
about each as JSON. Only pairs that pass three checks become records of task ``generated``:

* **self-contained** — the question names the article's subject (its title, the title without
  a "(...)" qualifier, or an alias), or else names some other proper noun (a capitalised word
  after the first) and has no dangling pronoun or demonstrative ("ele", "ela", "isso", "esta",
  "dele" ...); a question about "o trecho" / "o texto" is rejected either way;
* **short** — the answer has at most ``generator.max_answer_words`` words;
* **supported** — every content word of the answer (the normalised tokens of
  :mod:`core.metrics`, Portuguese stopwords left out) occurs in the passage or the title, so
  an answer the model made up, or a bare "Sim"/"Não", is dropped.

Each model reply is cached in ``OUT/generated.cache.jsonl`` as soon as it arrives (one line per
passage, keyed by a hash of the prompt, the generator's identity and :data:`PROMPT_VERSION`), so
a killed run resumes where it stopped and a re-run asks the model nothing. The records are
appended to ``instructions.{train,val}.jsonl`` (split by the same stable hash as the rest)
unless a record with their id is already there, and the counts go into ``ingest_report.json``
under ``generated``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from core.errors import UserError
from core.io import BadLine, JsonlAppender, atomic_write_json, iter_jsonl
from core.metrics import contains, tokens
from core.text import fold, fold_words
from ingest.config import GeneratorConfig, IngestConfig
from ingest.instructions import pack_sentences, record_id, sentences_of, split_of

log = logging.getLogger(__name__)

TASK = "generated"
CACHE_FILE = "generated.cache.jsonl"
PROMPT_VERSION = 1  # bump when the prompt or its wrapping changes: cached replies are then redone
REASONS = ("malformed", "refers_to_passage", "not_self_contained", "answer_too_long",
           "unsupported", "duplicate")
MIN_PASSAGE_CHARS = 200  # shorter passages rarely hold a fact worth a question
MAX_QUESTION_CHARS = 300
FAILURES_BEFORE_GIVING_UP = 5  # passages in a row that got no reply: the generator is down

PROMPT = """\
Leia o trecho abaixo, do artigo "{title}" da Wikipédia em português, e escreva {n} perguntas \
sobre fatos afirmados no trecho, cada uma com a sua resposta.

Regras:
- Cada pergunta deve ser entendida sem o trecho: escreva o nome do assunto ("{title}", ou o \
nome de quem ou do que se fala) em vez de "ele", "ela", "isso" ou "o texto".
- A resposta deve ser curta (no máximo {words} palavras) e usar as palavras do trecho.
- Escreva apenas uma lista JSON, sem comentários, neste formato:
[{{"pergunta": "...", "resposta": "..."}}]

Trecho:
{passage}
"""
COMPLETION_SUFFIX = "\nLista JSON:\n"  # base models (no chat template) continue from here

_DANGLING = frozenset(fold(w) for w in (
    "ele ela eles elas dele dela deles delas nele nela neles nelas isso isto aquilo disso disto "
    "daquilo nisso nisto este esta estes estas esse essa esses essas deste desta destes destas "
    "desse dessa desses dessas neste nesta nesse nessa seu sua seus suas lo la los las").split())
_PASSAGE_WORDS = frozenset({"trecho", "trechos", "texto", "passagem", "paragrafo"})
_THIS_ARTICLE = re.compile(r"\b(?:este|esse|neste|nesse|deste|desse|o|no|do)\s+artigo\b")
_FENCE = re.compile(r"```[A-Za-z]*\s*(.*?)```", re.S)
_FLAT_OBJECT = re.compile(r"\{[^{}]*\}", re.S)
_QUESTION_KEYS = ("pergunta", "question", "questao", "questão")
_ANSWER_KEYS = ("resposta", "answer")


class GeneratorError(UserError, RuntimeError):
    """The generator cannot be used at all (e.g. the endpoint refuses every request)."""


class Writer(Protocol):
    """Writes one reply per prompt (an Exception where that prompt got none)."""

    identity: dict[str, Any]
    batch_size: int

    def __call__(self, prompts: Sequence[str]) -> list[str | Exception]: ...


# -- passages and prompts ------------------------------------------------------------------------

@dataclass(frozen=True)
class Passage:
    title: str
    number: int  # the passage's place among its article's passages
    section: str
    text: str
    names: tuple[str, ...]  # the subject's names: title, title without "(...)", aliases

    def describe(self) -> str:
        where = f', section "{self.section}"' if self.section else ""
        return f"article {self.title!r}, passage {self.number}{where}"


def article_passages(article: dict[str, Any], max_chars: int,
                     limit: int | None = None) -> list[Passage]:
    """Passages of whole sentences, each within one section, in the article's order."""
    title = article["title"]
    short = re.sub(r"\s*\([^)]*\)$", "", title)
    names = tuple(dict.fromkeys([title, short, *(article.get("aliases") or [])]))
    out: list[Passage] = []
    for section in article.get("sections") or []:
        sentences = sentences_of(section.get("text") or "")
        start = 0
        while start < len(sentences):
            end, text = pack_sentences(sentences, start, max_chars)
            if not text:  # an over-long sentence or a bare list introduction
                start += 1
                continue
            start = end
            if len(text) >= MIN_PASSAGE_CHARS:
                out.append(Passage(title, len(out), section.get("heading") or "", text, names))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def render_prompt(passage: Passage, gcfg: GeneratorConfig) -> str:
    return PROMPT.format(title=passage.title, n=gcfg.questions_per_passage,
                         words=gcfg.max_answer_words, passage=passage.text)


def generator_identity(gcfg: GeneratorConfig) -> dict[str, Any]:
    """What names the generator in records and cache keys: model or endpoint, and decoding."""
    decoding = {"max_new_tokens": gcfg.max_new_tokens, "temperature": gcfg.temperature}
    if gcfg.temperature > 0:
        decoding["seed"] = gcfg.seed
    if gcfg.endpoint:
        return {"endpoint": gcfg.endpoint.rstrip("/"), "api": gcfg.api,
                "api_model": gcfg.api_model, **decoding}
    return {"model": gcfg.model, "revision": gcfg.revision, "quantize": gcfg.quantize, **decoding}


def cache_key(prompt: str, identity: dict[str, Any]) -> str:
    blob = json.dumps([PROMPT_VERSION, identity, prompt], sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=16).hexdigest()


# -- replies -------------------------------------------------------------------------------------

def _pair_items(value: Any) -> list[Any] | None:
    """The list of pair objects in a decoded JSON value, or None if it holds none."""
    if isinstance(value, dict):
        if any(k in value for k in _QUESTION_KEYS):
            return [value]
        lists = [v for v in value.values() if isinstance(v, list)]
        value = lists[0] if len(lists) == 1 else None
    if isinstance(value, list) and any(isinstance(v, dict) and any(k in v for k in _QUESTION_KEYS)
                                       for v in value):
        return value
    return None


def parse_reply(reply: str) -> list[Any]:
    """The pair objects of a reply: JSON inside code fences or amid other text; a reply cut off
    mid-list keeps its complete objects. Raises ValueError when there are none."""
    text = reply.strip()
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for cand in candidates:
        starts = [i for i, c in enumerate(cand) if c in "[{"][:50]
        for start in starts:
            try:
                value, _ = decoder.raw_decode(cand, start)
            except ValueError:
                continue
            items = _pair_items(value)
            if items is not None:
                return items
    items = []
    for m in _FLAT_OBJECT.finditer(text):
        try:
            items.extend(_pair_items(json.loads(m.group(0))) or [])
        except ValueError:
            continue
    if not items:
        raise ValueError("no JSON list of {\"pergunta\", \"resposta\"} objects in the reply")
    return items


def _field(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = item.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    return ""


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_PORTUGUESE

    return frozenset(fold(w) for w in STOPWORDS_PORTUGUESE)


def _content_words(text: str) -> list[str]:
    stop = _stopwords()
    return [t for t in tokens(text) if t not in stop]


def _has_proper_noun(question: str) -> bool:
    words = re.findall(r"[^\W\d_][\w'-]*", question)
    return any(w[0].isupper() for w in words[1:])


def check_pair(question: str, answer: str, passage: Passage, max_answer_words: int) -> str | None:
    """Why a pair is rejected (one of :data:`REASONS`), or None to keep it."""
    if not question or not answer or len(question) > MAX_QUESTION_CHARS:
        return "malformed"
    q_words = set(fold_words(question).split())
    if q_words & _PASSAGE_WORDS or _THIS_ARTICLE.search(fold_words(question)):
        return "refers_to_passage"
    names_subject = bool(contains(question, list(passage.names)))
    if not names_subject and (q_words & _DANGLING or not _has_proper_noun(question)):
        return "not_self_contained"
    if len(answer.split()) > max_answer_words:
        return "answer_too_long"
    content = _content_words(answer)
    known = set(tokens(passage.text)) | set(tokens(passage.title))
    if not content or any(w not in known for w in content):
        return "unsupported"
    return None


# -- writers -------------------------------------------------------------------------------------

class ModelWriter:
    """A causal LM loaded in this process with compara's loading, once, on first use."""

    def __init__(self, gcfg: GeneratorConfig):
        self.gcfg = gcfg
        self.identity = generator_identity(gcfg)
        self.batch_size = gcfg.batch_size
        self.loaded = None

    def _load(self) -> None:
        from core.config import GenerationConfig, ModelConfig
        from core.models import load_base

        g = self.gcfg
        self.loaded = load_base(ModelConfig(base=g.model, revision=g.revision,
                                            quantize=g.quantize, device=g.device))
        sample = g.temperature > 0
        self.decoding = GenerationConfig(
            max_new_tokens=g.max_new_tokens, do_sample=sample,
            temperature=g.temperature if sample else 1.0, top_p=1.0, top_k=0, seed=g.seed,
            batch_size=g.batch_size)

    def render(self, prompt: str) -> str:
        """The chat template where the tokenizer has one, else the plain completion prompt."""
        tok = self.loaded.tokenizer
        if not getattr(tok, "chat_template", None):
            return prompt + COMPLETION_SUFFIX
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        bos = tok.bos_token
        if bos and self.loaded.info.tokenizer.get("adds_bos") and text.startswith(bos):
            text = text[len(bos):]  # the tokenizer adds it again
        return text

    def __call__(self, prompts: Sequence[str]) -> list[str | Exception]:
        if self.loaded is None:
            self._load()
        from core.generation import generate

        try:
            gens = generate(self.loaded.model, self.loaded.tokenizer,
                            [self.render(p) for p in prompts], self.decoding)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory on a long batch
            return [exc] * len(prompts)
        return [g.text for g in gens]


class EndpointWriter:
    """An OpenAI-compatible server (vLLM, llama.cpp server); ``batch_size`` requests at once."""

    def __init__(self, gcfg: GeneratorConfig):
        import urllib.request

        self.gcfg = gcfg
        self.identity = generator_identity(gcfg)
        self.batch_size = gcfg.batch_size
        base = re.sub(r"/v1/?$", "", gcfg.endpoint.rstrip("/"))
        route = "chat/completions" if gcfg.api == "chat" else "completions"
        self.url = f"{base}/v1/{route}"
        # The server is on the user's machine: never route it through a proxy from the env.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _payload(self, prompt: str) -> dict[str, Any]:
        g = self.gcfg
        body: dict[str, Any] = {"max_tokens": g.max_new_tokens, "temperature": g.temperature,
                                "seed": g.seed}
        if g.api_model:
            body["model"] = g.api_model
        if g.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt + COMPLETION_SUFFIX
        return body

    def _post(self, prompt: str) -> str:
        import urllib.request

        req = urllib.request.Request(self.url, data=json.dumps(self._payload(prompt)).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with self._opener.open(req, timeout=self.gcfg.timeout_s) as resp:
            data = json.loads(resp.read().decode("utf-8"))
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if self.gcfg.api == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{self.url} answered without choices[0]."
                             f"{'message.content' if self.gcfg.api == 'chat' else 'text'}") from None
        return text or ""

    def one(self, prompt: str) -> str | Exception:
        """The reply to one prompt; timeouts and connection errors are retried."""
        import http.client
        import urllib.error

        attempts = self.gcfg.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._post(prompt)
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403, 404, 405):
                    raise GeneratorError(
                        f"{self.url} refused the request (HTTP {exc.code} {exc.reason}): is it an "
                        "OpenAI-compatible server, and is generator.api right (chat or "
                        "completions)?") from None
                if exc.code < 500:  # e.g. 400: this prompt is too long for the server's context
                    return RuntimeError(f"HTTP {exc.code} {exc.reason}: {_body(exc)}")
                error: Exception = exc
            except (OSError, http.client.HTTPException) as exc:  # timeouts, refused, reset
                error = exc
            except ValueError as exc:  # not JSON, or JSON of another shape
                return exc
            if attempt < attempts:
                log.warning("%s: %s (attempt %d of %d); retrying", self.url, _describe(error),
                            attempt, attempts)
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
        return RuntimeError(f"{_describe(error)} after {attempts} attempt(s)")

    def __call__(self, prompts: Sequence[str]) -> list[str | Exception]:
        if len(prompts) == 1:
            return [self.one(prompts[0])]
        with ThreadPoolExecutor(max_workers=min(self.batch_size, len(prompts))) as pool:
            return list(pool.map(self.one, prompts))


def _describe(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
        return "no reply within generator.timeout_s"
    if isinstance(reason, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    return f"{type(exc).__name__}: {reason or exc}"


def _body(exc: Any) -> str:
    try:
        return exc.read().decode("utf-8", "replace")[:200]
    except Exception:  # the body is only a hint in the message
        return ""


def load_writer(gcfg: GeneratorConfig) -> Writer:
    return EndpointWriter(gcfg) if gcfg.endpoint else ModelWriter(gcfg)


# -- the run -------------------------------------------------------------------------------------

def _read_cache(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}

    def bad(line: BadLine) -> None:
        log.warning("%s: skipped (the passage will be asked again)", line)

    return {rec["key"]: rec["reply"] for _, rec in iter_jsonl(path, on_error=bad)
            if isinstance(rec.get("key"), str) and isinstance(rec.get("reply"), str)}


def _known_records(out: Path) -> tuple[set[str], set[int]]:
    """Ids of every record in the published files, and the rule-based questions (folded)."""
    ids: set[str] = set()
    rule_questions: set[int] = set()
    for split in ("train", "val"):
        path = out / f"instructions.{split}.jsonl"
        if not path.exists():
            continue
        for _, rec in iter_jsonl(path, on_error=lambda line: log.warning("%s: skipped", line)):
            ids.add(str(rec.get("id")))
            if rec.get("task") != TASK:
                rule_questions.add(hash(fold_words(str(rec.get("instruction", "")))))
    return ids, rule_questions


def _passages(out: Path, gcfg: GeneratorConfig) -> Iterator[Passage]:
    taken = 0
    bad = lambda line: log.warning("%s: skipped", line)  # noqa: E731
    for _, article in iter_jsonl(out / "articles.jsonl", on_error=bad):
        if "title" not in article:
            continue
        for passage in article_passages(article, gcfg.passage_chars, gcfg.passages_per_article):
            if gcfg.max_passages is not None and taken >= gcfg.max_passages:
                return
            taken += 1
            yield passage


def _chunks(items: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    chunk: list[Passage] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Collector:
    """Checks replies and appends the pairs kept; counts everything on the way."""

    def __init__(self, out: Path, cfg: IngestConfig, identity: dict[str, Any]):
        self.icfg, self.gcfg, self.identity = cfg.instructions, cfg.instructions.generator, identity
        self.known_ids, self.rule_questions = _known_records(out)
        self.ids_this_run: set[str] = set()
        self.counts: Counter = Counter()
        self.rejected: Counter = Counter({r: 0 for r in REASONS})
        self.problems: list[str] = []
        self.appenders = {s: JsonlAppender(out / f"instructions.{s}.jsonl")
                          for s in ("train", "val")}

    def problem(self, message: str) -> None:
        log.warning("%s", message)
        self.problems.append(message)

    def take(self, passage: Passage, reply: str) -> None:
        """Check one reply's pairs; append those kept that are not in the files yet."""
        try:
            items = parse_reply(reply)
        except ValueError as exc:
            self.counts["bad_replies"] += 1
            self.problem(f"{passage.describe()}: {exc}; the reply starts {reply[:80]!r}")
            return
        for item in items:
            self.counts["proposed"] += 1
            reason = self._reject(passage, item)
            if reason:
                self.rejected[reason] += 1
                continue
            question, answer = _field(item, _QUESTION_KEYS), _field(item, _ANSWER_KEYS)
            rec_id = record_id(TASK, question, "")
            self.ids_this_run.add(rec_id)
            self.counts["kept"] += 1
            if rec_id in self.known_ids:
                continue  # in the files already (an earlier run)
            self.known_ids.add(rec_id)
            split = split_of(rec_id, self.icfg.val_fraction, self.icfg.split_salt)
            self.appenders[split].write({
                "id": rec_id, "instruction": question, "input": "", "output": answer,
                "source_title": passage.title, "task": TASK, "generator": self.identity})
            self.counts[f"appended_{split}"] += 1

    def _reject(self, passage: Passage, item: Any) -> str | None:
        if not isinstance(item, dict):
            return "malformed"
        question, answer = _field(item, _QUESTION_KEYS), _field(item, _ANSWER_KEYS)
        reason = check_pair(question, answer, passage, self.gcfg.max_answer_words)
        if reason:
            return reason
        if (hash(fold_words(question)) in self.rule_questions
                or record_id(TASK, question, "") in self.ids_this_run):
            return "duplicate"  # a rule-based question, or one asked about another passage
        return None

    def close(self) -> None:
        for appender in self.appenders.values():
            appender.close()

    def result(self) -> dict[str, Any]:
        c = self.counts
        return {
            "generator": self.identity, "prompt_version": PROMPT_VERSION,
            "passages": c["passages"], "from_cache": c["from_cache"],
            "model_calls": c["model_calls"], "errors": c["errors"], "not_asked": c["not_asked"],
            "bad_replies": c["bad_replies"], "pairs_proposed": c["proposed"], "kept": c["kept"],
            "appended": {"train": c["appended_train"], "val": c["appended_val"]},
            "rejected": dict(self.rejected), "problem_count": len(self.problems),
            "problems": self.problems[:100],
        }


def add_generated_instructions(out_dir: str | Path, cfg: IngestConfig, *,
                               writer: Writer | None = None) -> dict[str, Any]:
    """Add model-written pairs to the instruction set in ``out_dir``; returns the counts
    (also written into ``ingest_report.json`` under ``generated``).

    ``writer`` replaces the configured model or endpoint (tests). The model is loaded only if
    some passage is not in the cache yet. Raises :class:`GeneratorError` (or
    :class:`core.models.ModelNotFound`) when the generator cannot be used at all; the
    rule-based records are never touched.
    """
    from core.logs import progress

    gcfg = cfg.instructions.generator
    if writer is None and not gcfg.enabled:
        raise GeneratorError("no generator configured: set ingest.instructions.generator.model "
                             "or .endpoint")
    out = Path(out_dir)
    start = time.monotonic()
    identity = writer.identity if writer is not None else generator_identity(gcfg)
    batch = writer.batch_size if writer is not None else gcfg.batch_size
    cache_path = out / CACHE_FILE
    cache = _read_cache(cache_path)
    run = _Collector(out, cfg, identity)
    counts = run.counts
    failures_in_row, gave_up = 0, False
    bar = progress(desc="questions", unit=" passages", total=gcfg.max_passages)
    try:
        with JsonlAppender(cache_path) as cache_out:
            for chunk in _chunks(_passages(out, gcfg), batch):
                prompts = [render_prompt(p, gcfg) for p in chunk]
                keys = [cache_key(p, identity) for p in prompts]
                missing = [i for i, k in enumerate(keys) if k not in cache]
                counts["passages"] += len(chunk)
                counts["from_cache"] += len(chunk) - len(missing)
                if missing and gave_up:
                    counts["not_asked"] += len(missing)
                elif missing:
                    writer = writer or load_writer(gcfg)  # loaded once, on first need
                    replies = writer([prompts[i] for i in missing])
                    counts["model_calls"] += len(missing)
                    for i, reply in zip(missing, replies, strict=True):
                        if isinstance(reply, Exception):
                            counts["errors"] += 1
                            failures_in_row += 1
                            run.problem(f"{chunk[i].describe()}: no reply ({reply}); skipped, "
                                        "it will be asked again on the next run")
                            continue
                        failures_in_row = 0
                        cache[keys[i]] = reply
                        cache_out.write({"key": keys[i], "title": chunk[i].title,
                                         "passage": chunk[i].number, "reply": reply})
                    if failures_in_row >= FAILURES_BEFORE_GIVING_UP:
                        gave_up = True
                        run.problem(f"{failures_in_row} passages in a row got no reply: the "
                                    "generator seems down; the other passages are taken from "
                                    "the cache only")
                for passage, key in zip(chunk, keys, strict=True):
                    if key in cache:
                        run.take(passage, cache[key])
                bar.update(len(chunk))
    finally:
        bar.close()
        run.close()
    result = {**run.result(), "cache": str(cache_path),
              "elapsed_s": round(time.monotonic() - start, 2)}
    report_path = out / "ingest_report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        report["generated"] = result
        atomic_write_json(report_path, report)
    return result


def summary_line(result: dict[str, Any]) -> str:
    """One line for the terminal: what the model proposed and what was kept."""
    rejected = ", ".join(f"{k} {v:,}" for k, v in result["rejected"].items() if v) or "none"
    appended = result["appended"]
    return (f"model-written questions: {result['kept']:,} kept of {result['pairs_proposed']:,} "
            f"proposed over {result['passages']:,} passages ({result['from_cache']:,} from the "
            f"cache, {result['model_calls']:,} asked, {result['errors']:,} without reply, "
            f"{result['bad_replies']:,} unreadable); rejected: {rejected}; appended "
            f"{appended['train']:,} train + {appended['val']:,} val")

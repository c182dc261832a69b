"""Answer metrics that are honest in Portuguese, and bootstrap intervals for their means.

Every text metric compares *normalised tokens*: case folded, accents removed (unless
``keep_accents``), punctuation turned into spaces, and Portuguese articles and article
contractions dropped (``o, a, os, as, um, uma, do, da, no, na, ao, à, pelo, num, dum`` ...), so
"Rio Tocantins" matches "o rio Tocantins." (SQuAD does the same with "a, an, the"). A text made
only of articles ("A", "um") keeps them, so it does not vanish.

- :func:`exact_match`, :func:`token_f1`: SQuAD style, the best over several references;
- :func:`contains`: a reference occurs in the answer as whole words (the telling metric for
  generated sentences: "Foi fundada por Estácio de Sá em 1565." contains "Estácio de Sá");
- :func:`rouge_l`: F-measure of the longest common token subsequence;
- :func:`repetition_rate`: share of repeated word 3-grams (degenerate loops score high);
- :func:`is_abstention`: the answer declines ("Os trechos não contêm a resposta.", "não sei"...);
- :func:`support`, :func:`retrieval_hit`: for the retrieval arms, whether a reference is in the
  retrieved passages, and whether a passage comes from the question's source article;
- :func:`score_answer`: all of them for one results record, with the two judge-free measures
  that need only text (``portuguese``, ``faithfulness``: :mod:`core.measures`); the ones
  that need a model (``ref_logprob``, ``mc_correct``, ``similarity``) are computed by the batch
  runner and kept through a re-scoring;
- :func:`bootstrap_mean`, :func:`paired_bootstrap`: seeded 95% intervals, resampling questions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from core.text import fold

ARTICLES = frozenset(
    "o a os as um uma uns umas do da dos das no na nos nas ao aos à às "
    "pelo pela pelos pelas num numa dum duma".split()
)
METRICS = ("em", "f1", "contains", "rouge_l", "repetition", "abstained", "abstained_correctly",
           "support", "retrieval_hit")
# The judge-free measures by their name in ``eval.measures``, and the metrics each one writes
# (core.likelihood: likelihood, choice; core.measures: similarity, language, faithfulness).
MEASURES = {"likelihood": ("ref_logprob", "ref_best"),
            "choice": ("mc_correct", "mc_rank", "mc_choices"),
            "similarity": ("similarity",), "language": ("portuguese",),
            "faithfulness": ("faithfulness",)}
MEASURE_METRICS = ("ref_logprob", "mc_correct", "similarity", "portuguese", "faithfulness")
# The order metrics are summarised and shown in everywhere (summary.json and .csv, the terminal,
# report.html, the app): what
# an answer got right, then how it abstained and ended, then the measures without a judge.
# ANSWER_METRICS: the first ones, the badges of one answer; BINARY: per answer, yes or no.
DISPLAY_ORDER = ("contains", "f1", "em", "rouge_l", "support", "retrieval_hit",
                 "abstained_correctly", "abstained", "repetition", "stopped_on_eos",
                 "ended_cleanly", *MEASURE_METRICS)
ANSWER_METRICS = DISPLAY_ORDER[:6]
BINARY = frozenset({"em", "contains", "support", "retrieval_hit", "abstained",
                    "abstained_correctly", "mc_correct", "portuguese"})
# Computed with the model or the embedder, so a re-scoring keeps them as they were written.
MODEL_FIELDS = (*MEASURES["likelihood"], *MEASURES["choice"], "similarity")
# Not a share: shown as a value, not in percent.
VALUE_METRICS = frozenset({"ref_logprob", "similarity"})
LABELS = {
    "ref_logprob": "ref. log-prob", "mc_correct": "multiple choice",
    "similarity": "similarity", "portuguese": "in Portuguese", "faithfulness": "faithfulness",
    "em": "exact match", "f1": "token F1", "contains": "contains", "rouge_l": "ROUGE-L",
    "repetition": "repetition", "abstained": "abstained (all)",
    "abstained_correctly": "correct abstention", "support": "support",
    "retrieval_hit": "retrieval hit", "stopped_on_eos": "stopped on EOS",
    "ended_cleanly": "ended cleanly",
}
# How far into an answer a declining phrase counts (a refusal comes first; a long answer that
# mentions "não há informação" about a side detail late in its text has not declined).
ABSTAIN_SCAN_CHARS = 300

_PUNCT = re.compile(r"[^\w\s]")


# -- normalisation --------------------------------------------------------------------------------

def words(text: str, keep_accents: bool = False) -> list[str]:
    """Case-folded words, punctuation as separators (articles kept)."""
    return _PUNCT.sub(" ", fold(text or "", accents=keep_accents)).split()


def tokens(text: str, keep_accents: bool = False) -> list[str]:
    """The normalised tokens every text metric compares: :func:`words` without articles."""
    ws = words(text, keep_accents)
    kept = [w for w in ws if w not in ARTICLES]
    return kept if kept else ws


def normalize(text: str, keep_accents: bool = False) -> str:
    return " ".join(tokens(text, keep_accents))


def _references(references: str | Sequence[str] | None) -> list[str]:
    if references is None:
        return []
    if isinstance(references, str):
        references = [references]
    return [r for r in references if isinstance(r, str) and r.strip()]


# -- correctness against references ---------------------------------------------------------------

def _token_pair(prediction: str, reference: str, keep_accents: bool) -> tuple[list[str], list[str]]:
    """Normalised tokens of a prediction and one reference. A reference made only of articles
    ("um", "A") is compared with articles kept on both sides, or it could never match."""
    ref = words(reference, keep_accents)
    if ref and all(w in ARTICLES for w in ref):
        return words(prediction, keep_accents), ref
    return tokens(prediction, keep_accents), tokens(reference, keep_accents)


def exact_match(prediction: str, references: str | Sequence[str],
                keep_accents: bool = False) -> float | None:
    """1.0 when the normalised prediction equals a normalised reference; None without one."""
    refs = _references(references)
    if not refs:
        return None
    return float(any(p == r for p, r in (_token_pair(prediction, ref, keep_accents)
                                         for ref in refs)))


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: str | Sequence[str],
             keep_accents: bool = False) -> float | None:
    """SQuAD token F1 (bag of normalised tokens), best over the references."""
    refs = _references(references)
    if not refs:
        return None
    return max(_f1(*_token_pair(prediction, ref, keep_accents)) for ref in refs)


def _find(needle: list[str], hay: list[str]) -> bool:
    n = len(needle)
    if not n or n > len(hay):
        return False
    first = needle[0]
    return any(hay[i] == first and hay[i:i + n] == needle for i in range(len(hay) - n + 1))


def contains(answer: str, references: str | Sequence[str], keep_accents: bool = False) -> float | None:
    """1.0 when a reference occurs in the answer as whole normalised words.

    Extends :func:`core.text.contains_answer` (case, accents, punctuation) by also ignoring
    articles on both sides: whatever ``contains_answer`` finds, this finds too.
    """
    refs = _references(references)
    if not refs:
        return None
    found = False
    for ref in refs:
        hay, needle = _token_pair(answer, ref, keep_accents)
        if _find(needle, hay):
            found = True
            break
    return float(found)


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, references: str | Sequence[str],
            keep_accents: bool = False) -> float | None:
    """ROUGE-L F1: longest common subsequence of normalised tokens, best over references."""
    refs = _references(references)
    if not refs:
        return None
    best = 0.0
    for ref in refs:
        pred, ref_tokens = _token_pair(prediction, ref, keep_accents)
        lcs = _lcs(pred, ref_tokens) if pred and ref_tokens else 0
        if lcs:
            p, r = lcs / len(pred), lcs / len(ref_tokens)
            best = max(best, 2 * p * r / (p + r))
    return best


# -- answer quality without references ----------------------------------------------------------

def repetition_rate(answer: str, n: int = 3) -> float:
    """Share of the answer's word n-grams that repeat an earlier one (0.0 for fewer than n
    words). "a b c a b c a b c" → 7 trigrams, 3 distinct → 4/7."""
    ws = words(answer)
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


# Patterns over the folded answer (lower case, no accents, punctuation kept).
_DOC = r"(?:trechos?|textos?|contextos?|artigos?|passage(?:m|ns)|documentos?|fontes?|informac\w+|dados)"
_INFO = r"(?:informac\w*|dados?|registros?|resposta|mencao|referencias?|detalhes?)"
ABSTAIN_PATTERNS = (
    r"\bnao (?:sei|saberia|saberei)\b",
    r"\bnao (?:encontrei|encontramos|localizei|achei)\b",
    r"\bnao (?:ha|existem?|tenho|temos|possuo|disponho de|consta\w*|(?:foi|foram) encontrad\w*)\b"
    rf"[^.!?]{{0,40}}?\b{_INFO}\b",
    r"\bnao consta\w*\b",
    r"\bnao (?:e|foi|seria|sera) possivel (?:responder|determinar|saber|afirmar|dizer|identificar"
    r"|precisar|informar|encontrar|confirmar|indicar)\b",
    r"\bnao (?:consigo|posso|pude|sou capaz de|tenho como|ha como) (?:responder|dizer|afirmar"
    r"|determinar|informar|encontrar|confirmar|saber|precisar|indicar)\b",
    rf"\b{_DOC}\b[^.!?]{{0,40}}?\bnao (?:contem|tem|menciona\w*|informa\w*|especifica\w*|diz(?:em)?"
    r"|traz(?:em)?|apresenta\w*|fornece\w*|indica\w*|inclu\w*|cita\w*|aborda\w*|refere\w*)\b",
    r"\bnao se sabe\b",
    rf"\b{_INFO} (?:nao (?:esta|estao|foi|foram|e) (?:disponive\w*|encontrad\w*|conhecid\w*)"
    r"|indisponive\w*)\b",
    rf"\bsem {_INFO}\b",
)


@lru_cache(maxsize=1)
def _template_abstain() -> str:
    """The abstain sentence of the shipped RAG template ("Os trechos não contêm a resposta.")."""
    from core.prompts import RagTemplate

    try:
        return RagTemplate.load().abstain
    except (FileNotFoundError, ValueError):  # a broken install must not break scoring
        return "Os trechos não contêm a resposta."


@lru_cache(maxsize=32)
def _abstain_regex(extra: tuple[str, ...]) -> re.Pattern[str]:
    phrases = [_template_abstain(), *extra]
    literal = [r"\b" + r"\W+".join(map(re.escape, words(p))) + r"\b" for p in phrases if words(p)]
    return re.compile("|".join([*literal, *ABSTAIN_PATTERNS]))


def is_abstention(answer: str, phrases: Iterable[str] = ()) -> bool:
    """Whether the answer declines to answer: the RAG template's abstain sentence, ``phrases``
    (e.g. another template's), or the usual Portuguese ways ("não sei", "não encontrei", "não há
    informação", "não é possível responder", "o texto não menciona" ...) within its first
    :data:`ABSTAIN_SCAN_CHARS` characters. An empty answer has not abstained (it failed)."""
    head = fold(answer or "")[:ABSTAIN_SCAN_CHARS]
    return bool(head) and _abstain_regex(tuple(phrases)).search(head) is not None


# -- retrieval ----------------------------------------------------------------------------------

def support(references: str | Sequence[str], passages: Sequence[Mapping[str, Any]],
            keep_accents: bool = False) -> float | None:
    """1.0 when a reference occurs (whole normalised words) in a retrieved passage, as the
    model saw it (title, section and text); None without references."""
    refs = _references(references)
    if not refs:
        return None
    for p in passages:
        seen = " \n ".join(str(p.get(k) or "") for k in ("title", "section", "text"))
        if contains(seen, refs, keep_accents):
            return 1.0
    return 0.0


def retrieval_hit(passages: Sequence[Mapping[str, Any]], titles: Iterable[str]) -> float | None:
    """1.0 when a passage's title equals one of the question's source titles (case and accents
    ignored); None when no source title is known."""
    wanted = {fold(t) for t in titles if t}
    if not wanted:
        return None
    return float(any(fold(str(p.get("title") or "")) in wanted for p in passages))


# -- one answer -------------------------------------------------------------------------------

def _exposure_of(exposure: Any, question_id: str) -> Any:
    if exposure is None:
        return None
    if isinstance(exposure, Mapping):
        return exposure.get(question_id)
    return exposure  # one question's exposure


def retrieved(record: dict[str, Any]) -> bool:
    """Whether a results record came from an arm with retrieval: it has passages, or its
    identity names an index (records of any version; a prompt cut to no passage included)."""
    identity = record.get("identity") if isinstance(record.get("identity"), dict) else {}
    return bool(record.get("passages")) or bool(identity.get("index")) or bool(
        identity.get("retrieval"))


def score_answer(record: dict[str, Any], exposure: Any = None, keep_accents: bool = False,
                 abstain_phrases: Iterable[str] = (),
                 measures: Iterable[str] = tuple(MEASURES)) -> dict[str, Any]:
    """Every metric of one results record (question × arm); also stored in ``record["metrics"]``.

    None marks what does not apply: correctness metrics without a reference, ``support`` and
    ``retrieval_hit`` for arms without retrieval (or without a reference / source title),
    ``abstained_correctly`` for questions that are not known to be unanswerable. An answer to
    an answerable question that declines and does not contain a reference is a miss: its
    em, f1, contains and rouge_l are 0 whatever words it shares with the reference.
    ``exposure`` (question id → :class:`core.exposure.Exposure`, or one of them) adds
    ``exposure_outputs`` and ``exposure_records``. ``abstain_phrases``: the abstain sentence
    of the RAG template actually used, when it is not the shipped one.

    ``measures`` (``eval.measures``): ``language`` adds ``portuguese`` (True / False, None for
    an answer too short to tell), ``faithfulness`` adds ``faithfulness`` for the retrieval arms
    (the share of the answer's content words found in its passages). The model's measures
    already in ``record["metrics"]`` (:data:`MODEL_FIELDS`) are kept.
    """
    answer = record.get("answer") or ""
    refs = _references(record.get("reference"))
    unanswerable = record.get("answerable") is False
    passages = record.get("passages") or []
    retrieval = retrieved(record)
    extra = record.get("extra") or {}
    titles = [record.get("source_title"), *(extra.get("source_titles") or []),
              *(record.get("source_titles") or [])]
    titles = [t for t in titles if isinstance(t, str) and t]

    abstained = is_abstention(answer, abstain_phrases)
    m: dict[str, Any] = {
        "em": exact_match(answer, refs, keep_accents),
        "f1": token_f1(answer, refs, keep_accents),
        "contains": contains(answer, refs, keep_accents),
        "rouge_l": rouge_l(answer, refs, keep_accents),
        "repetition": repetition_rate(answer),
        "abstained": abstained,
        "abstained_correctly": abstained if unanswerable else None,
        "support": support(refs, passages, keep_accents) if retrieval else None,
        "retrieval_hit": retrieval_hit(passages, titles) if retrieval else None,
    }
    if abstained and refs and not m["contains"]:
        m.update(em=0.0, f1=0.0, contains=0.0, rouge_l=0.0)
    measures = set(measures)
    if "language" in measures:
        from core.measures import is_portuguese

        m["portuguese"] = is_portuguese(answer)
    if "faithfulness" in measures:
        from core.measures import faithfulness

        m["faithfulness"] = (faithfulness(answer, passages, keep_accents, abstain_phrases)
                             if retrieval else None)
    old = record.get("metrics") or {}
    m.update({k: old[k] for k in MODEL_FIELDS if k in old})
    exp = _exposure_of(exposure, str(record.get("question_id")))
    if exposure is not None:
        m["exposure_outputs"] = getattr(exp, "outputs", None)
        m["exposure_records"] = getattr(exp, "records", None)
    record["metrics"] = m
    return m


# -- intervals ----------------------------------------------------------------------------------

@dataclass
class Interval:
    """A mean with its bootstrap interval over ``n`` values (all None when ``n`` is 0)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None]


def _resampled_means(data: Any, resamples: int, seed: int) -> Any:
    """Means of ``resamples`` bootstrap samples of the rows of ``data`` (n × k array), k
    columns at once; chunked so memory stays bounded for large n."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = data.shape[0]
    chunk = max(1, min(resamples, 4_000_000 // max(n, 1)))
    out = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        out.append(data[idx].mean(axis=1))
    return np.concatenate(out)


def bootstrap_mean(values: Iterable[Any], resamples: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> Interval:
    """The mean of the non-None values and its percentile bootstrap interval (seeded)."""
    import numpy as np

    vals = _values(values)
    if not vals:
        return Interval(None, None, None, 0)
    data = np.asarray(vals, dtype=float)
    mean = float(data.mean())
    if len(vals) == 1 or resamples < 1:
        return Interval(mean, mean, mean, len(vals))
    means = _resampled_means(data[:, None], resamples, seed)[:, 0]
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return Interval(mean, float(lo), float(hi), len(vals))


@dataclass
class PairedDifference:
    """Mean of (a − b) over the questions both arms have a value for, with its interval and
    the two-sided bootstrap share of resamples on the other side of zero (``p``)."""

    a: str
    b: str
    metric: str
    diff: float | None
    lo: float | None
    hi: float | None
    n: int
    p: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(a: Mapping[str, Any], b: Mapping[str, Any], resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0, names: tuple[str, str] = ("a", "b"),
                     metric: str = "") -> PairedDifference:
    """Compare two arms on the same questions: ``a`` and ``b`` map question id → value.

    Questions are resampled together (the pair stays a pair), which is what makes a small
    difference on the same questions detectable when two unpaired intervals overlap.
    """
    import numpy as np

    keys = sorted(k for k in a.keys() & b.keys() if a[k] is not None and b[k] is not None)
    if not keys:
        return PairedDifference(*names, metric, None, None, None, 0, None)
    d = np.asarray([float(a[k]) - float(b[k]) for k in keys])
    diff = float(d.mean())
    if len(keys) == 1 or resamples < 1:
        return PairedDifference(*names, metric, diff, diff, diff, len(keys), None)
    means = _resampled_means(d[:, None], resamples, seed)[:, 0]
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    if np.all(d == 0):
        p = 1.0
    else:
        p = float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    return PairedDifference(*names, metric, diff, float(lo), float(hi), len(keys), p)

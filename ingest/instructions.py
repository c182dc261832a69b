"""The instruction set: Alpaca-style records in Portuguese derived from each article.

Task types (``task`` field):

* ``definition`` — "Quem foi X?" / "O que é X?" -> the lead's first sentences;
* ``summary`` — "Resuma o artigo sobre X." -> the lead;
* ``section`` — "O que o artigo sobre X diz em "Seção"?" -> the section's text; long sections
  continue as "Continue o texto..." records whose input is the preceding sentences;
* ``infobox`` — "Quando nasceu X?", "Qual é a capital de X?" -> an answer sentence;
* ``table`` — a table row's value -> "Linha — Coluna: valor.";
* ``fact`` — every fact-bearing sentence of the prose (lead and sections) asked as a question
  naming the subject ("Quando Tiradentes foi preso?") -> the sentence (see ingest/facts.py);
* ``passage_title`` — a passage with the title masked -> the title.

Every sentence of the prose ends up in some output: long leads continue like long sections
("Continue o texto do artigo X."), and :func:`sentence_coverage` measures it per article.

Fact questions (definition, infobox, table) come in several phrasings: models absorb a new fact
only when they see it phrased several ways. Records are deduplicated and split into train/val by
a stable hash of their id, so adding pages never reshuffles the split.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import operator
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ingest.config import InstructionConfig

# Titles written before a name ("D. Pedro", "Dr. Oswaldo"): no sentence ends after one, and a
# name that follows one includes it (ingest.facts).
TITLES = ("Sr", "Sra", "Dr", "Dra", "Prof", "Profa", "Sto", "Sta", "S", "D", "Dom", "Pe", "Fr",
          "Gen", "Cel", "Cap", "Ten", "Exmo", "Exma", "Ilmo", "Revmo", "Mons", "Ir")
_ABBREVIATIONS = TITLES + (
    "Av", "Mt", "etc", "p", "pp", "ed", "vol", "n", "nº", "a.C", "d.C", "séc", "aprox", "cf", "ex",
    "fig", "jan", "fev", "mar", "abr", "jun", "jul", "ago", "set", "out", "nov", "dez", "St", "Jr",
    "Ltda", "Cia", "Mr", "Mrs", "Ph.D", "EUA", "U.S", "art", "arts", "inc", "al", "cap", "caps",
    "núm", "pág", "págs", "tel", "obs", "cit", "op", "ibid", "id")
# The stop (and a closing quote or parenthesis after it) is captured, not looked behind for: the
# engine then jumps from stop to stop instead of trying a lookbehind at every character (4x faster).
_SENTENCE_END = re.compile(r"([.!?…][\"”»)]?)\s+(?=[\"“«(]?[A-ZÁÂÃÀÉÊÍÓÔÕÚÇ0-9])")
_ABBREV_SET = frozenset(a + "." for a in _ABBREVIATIONS)


def _ends_with_abbreviation(piece: str) -> bool:
    """"D.", "Sr.", "a.C." or an initial ("J.") end this piece: no sentence break here."""
    last = piece[piece.rfind(" ") + 1:]
    last = last.lstrip("(\"“«")
    return last in _ABBREV_SET or (len(last) == 2 and last[0].isupper()) or last.endswith(".C.")
_TABLE_LINE = re.compile(r"^([^:;\n]{1,60}): ([^;\n]+)((?:; [^:;\n]{1,60}: [^;\n]+)+)$")

PERSON_TYPES = ("biografia", "pessoa", "personalidade", "escritor", "político", "politico",
                "cientista", "músico", "musico", "artista", "militar", "monarca", "nobre",
                "presidente", "futebolista", "ator", "atriz", "santo", "religioso", "filósofo")
EVENT_TYPES = ("conflito", "evento", "guerra", "batalha", "revolução", "revolucao", "revolta",
               "acontecimento", "eleição", "eleicao")

# Infobox fields with their own questions. {T} is the title, {v} the value.
FIELD_QUESTIONS: dict[tuple[str, ...], tuple[list[str], str]] = {
    ("nascimento_data", "data_nascimento", "data_de_nascimento", "nascimento"): (
        ["Quando nasceu {T}?", "Em que data nasceu {T}?", "Qual é a data de nascimento de {T}?",
         "{T} nasceu em que data?"], "{T} nasceu em {v}."),
    ("nascimento_local", "local_nascimento", "local_de_nascimento", "naturalidade"): (
        ["Onde nasceu {T}?", "Em que lugar nasceu {T}?", "Qual é o local de nascimento de {T}?",
         "{T} nasceu em que lugar?"], "{T} nasceu em {v}."),
    ("morte_data", "data_morte", "falecimento_data", "data_falecimento", "morte"): (
        ["Quando morreu {T}?", "Em que data morreu {T}?", "Qual é a data de morte de {T}?",
         "{T} morreu em que data?"], "{T} morreu em {v}."),
    ("morte_local", "local_morte", "falecimento_local", "local_falecimento"): (
        ["Onde morreu {T}?", "Em que lugar morreu {T}?", "Qual é o local de morte de {T}?",
         "{T} morreu em que lugar?"], "{T} morreu em {v}."),
    ("ocupação", "ocupacao", "profissão", "profissao", "atividade"): (
        ["Qual era a ocupação de {T}?", "Em que trabalhava {T}?", "Qual foi a profissão de {T}?",
         "A que se dedicou {T}?"], "A ocupação de {T} era: {v}."),
    ("nacionalidade",): (
        ["Qual era a nacionalidade de {T}?", "De que nacionalidade era {T}?",
         "Qual a nacionalidade de {T}?"], "A nacionalidade de {T} era {v}."),
    ("conhecido_por", "conhecido por", "principais_trabalhos", "obras"): (
        ["Pelo que {T} é conhecido?", "Por que {T} ficou conhecido?",
         "Qual é a fama de {T}?"], "{T} é conhecido por: {v}."),
    ("capital",): (
        ["Qual é a capital de {T}?", "Qual cidade é a capital de {T}?", "Onde fica a capital de {T}?",
         "Qual a capital de {T}?"], "A capital de {T} é {v}."),
    ("população", "populacao", "população_total", "pop", "habitantes"): (
        ["Qual é a população de {T}?", "Quantos habitantes tem {T}?", "Quantas pessoas vivem em {T}?",
         "Qual o número de habitantes de {T}?"], "A população de {T} é de {v}."),
    ("área", "area", "área_total", "area_total", "área_km2"): (
        ["Qual é a área de {T}?", "Qual o tamanho da área de {T}?", "Quantos quilômetros quadrados tem {T}?"],
        "A área de {T} é de {v}."),
    ("moeda",): (
        ["Qual é a moeda de {T}?", "Que moeda se usa em {T}?", "Qual a moeda oficial de {T}?"],
        "A moeda de {T} é {v}."),
    ("língua_oficial", "lingua_oficial", "línguas_oficiais", "idioma_oficial", "idioma", "língua"): (
        ["Qual é a língua oficial de {T}?", "Que língua se fala oficialmente em {T}?",
         "Qual o idioma oficial de {T}?"], "A língua oficial de {T} é {v}."),
    ("gentílico", "gentilico"): (
        ["Qual é o gentílico de {T}?", "Como se chama quem nasce em {T}?",
         "Qual o gentílico de quem nasce em {T}?"], "O gentílico de {T} é {v}."),
    ("fundação", "fundacao", "data_fundação", "fundação_data", "fundada", "fundado"): (
        ["Quando ocorreu a fundação de {T}?", "Em que data se deu a fundação de {T}?",
         "Qual é a data de fundação de {T}?"], "A fundação de {T} ocorreu em {v}."),
    ("independência", "independencia"): (
        ["Quando {T} conquistou a independência?", "Qual é a data da independência de {T}?",
         "Em que data {T} se tornou independente?"], "A independência de {T} ocorreu em {v}."),
    ("nascente",): (
        ["Onde nasce {T}?", "Qual é a nascente de {T}?", "Onde fica a nascente de {T}?"],
        "A nascente de {T} fica em {v}."),
    ("foz",): (
        ["Onde deságua {T}?", "Qual é a foz de {T}?", "Onde fica a foz de {T}?"],
        "A foz de {T} é {v}."),
    ("comprimento", "extensão", "extensao"): (
        ["Qual é o comprimento de {T}?", "Quantos quilômetros tem {T}?", "Qual a extensão de {T}?"],
        "O comprimento de {T} é de {v}."),
    ("autor", "autores", "autoria"): (
        ["Quem é o autor de {T}?", "Quem escreveu {T}?", "De quem é a autoria de {T}?"],
        "O autor de {T} é {v}."),
    ("lançamento", "lancamento", "publicação", "publicacao", "data_publicação", "ano"): (
        ["Quando foi publicada a obra {T}?", "Em que ano saiu {T}?", "Qual é a data de publicação de {T}?"],
        "{T} foi publicado em {v}."),
    ("data", "período", "periodo", "data_início", "data_inicio", "início", "inicio"): (
        ["Quando ocorreu {T}?", "Em que época aconteceu {T}?", "Qual é a data de {T}?"],
        "{T} ocorreu em {v}."),
    ("local", "localização", "localizacao", "lugar", "estado", "país", "pais", "região", "regiao"): (
        ["Onde fica {T}?", "Qual é a localização de {T}?", "Em que lugar se situa {T}?"],
        "{T} fica em {v}."),
}
_FIELD_INDEX = {key: value for keys, value in FIELD_QUESTIONS.items() for key in keys}
_FEMININE_LABELS = {"capital", "foz", "nascente", "sede", "cor", "pele", "fé", "lei", "ordem",
                    "classe", "família", "espécie", "data", "idade", "altura", "altitude",
                    "superfície", "origem"}
_SKIP_FIELDS = {"nome", "título", "titulo", "cor", "estilo", "tipo", "coordenadas", "site",
                "website", "url", "mapa", "legenda", "assinatura", "imagem", "notas", "nota",
                "wikidata", "commons"}


def split_sentences(text: str) -> list[str]:
    """Portuguese sentences (abbreviations such as "D. Pedro" and "a.C." do not split)."""
    parts: list[str] = []
    cut = _SENTENCE_END.split(text.strip())  # text, stop, text, stop, ..., text
    for piece in map(str.__add__, cut[::2], [*cut[1::2], ""]):
        if parts and (_ends_with_abbreviation(parts[-1]) or parts[-1].count("(") > parts[-1].count(")")):
            parts[-1] = f"{parts[-1]} {piece}"
        else:
            parts.append(piece)
    return [p.strip() for p in parts if p.strip()]


def sentences_of(text: str) -> list[str]:
    """The sentences of a multi-line text (each line, e.g. a list item, splits on its own)."""
    out: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            out.extend(split_sentences(line))
    return out


def pack_sentences(sentences: list[str], start: int, max_chars: int,
                   max_sentences: int | None = None) -> tuple[int, str]:
    """Whole sentences from ``start`` up to ``max_chars``: (index after the last one, text).

    The first sentence is taken even if longer, when it is at most 1.5x the limit (else
    nothing is). A sentence that introduces a list ("... foram:") keeps at least its next item
    when that fits in 1.5x the limit; an introduction whose items were all cut is left for the
    next pack, so an answer never ends on a colon.
    """
    out: list[str] = []
    size = 0
    for sentence in sentences[start:]:
        extra = len(sentence) + (1 if out else 0)
        intro = bool(out) and out[-1].endswith(":")
        if out and size + extra > max_chars and not (intro and size + extra <= max_chars * 1.5):
            break
        if max_sentences and len(out) >= max_sentences and not intro:
            break
        if not out and len(sentence) > max_chars * 1.5:
            return start, ""
        out.append(sentence)
        size += extra
    while out and out[-1].endswith(":"):
        out.pop()
    return start + len(out), " ".join(out)


def take_sentences(text: str, max_chars: int, max_sentences: int | None = None) -> str:
    """Whole sentences from the start of ``text`` up to ``max_chars`` (see pack_sentences)."""
    return pack_sentences(sentences_of(text), 0, max_chars, max_sentences)[1]


def record_id(task: str, instruction: str, input: str) -> str:
    key = f"{task}\x1f{instruction}\x1f{input}".encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()


def split_of(rec_id: str, val_fraction: float, salt: str) -> str:
    """'train' or 'val', stable for a record whatever else is in the set."""
    return splits_of([rec_id], val_fraction, salt)[0]


def splits_of(rec_ids: Iterable[str], val_fraction: float, salt: str) -> list[str]:
    """:func:`split_of` of each id (one article's records at once)."""
    keyed, threshold = _split_params(salt, val_fraction)
    out = []
    for rec_id in rec_ids:
        h = keyed.copy()  # the salt's key block is hashed once, not once per record
        h.update(rec_id.encode())
        out.append("val" if int.from_bytes(h.digest(), "big") < threshold else "train")
    return out


@functools.lru_cache(maxsize=8)
def _split_params(salt: str, val_fraction: float) -> tuple[Any, float]:
    """A hash keyed with the salt, and the cut-off of the val split (a hash below it: val)."""
    return hashlib.blake2b(digest_size=8, key=salt.encode()[:64]), val_fraction * 2**64


def _kind(article: dict[str, Any]) -> str:
    itype = (article.get("infobox_type") or "").lower()
    box = article.get("infobox") or {}
    if itype.startswith(PERSON_TYPES) or "nascimento_data" in box or "nascimento_local" in box:
        return "person"
    if itype.startswith(EVENT_TYPES):
        return "event"
    return "thing"


def _field_label(key: str) -> tuple[str, str, bool]:
    """(label, article, plural) of an infobox field: "variações" -> ("variações", "as", True)."""
    label = key.replace("_", " ").strip()
    word = label.split()[0]
    plural = word.endswith("s") and not word.endswith(("ês", "ás", "ís", "ós", "ús"))
    base = word[:-1] if plural else word
    if base.endswith("õe"):
        base = base[:-2] + "ão"
    feminine = (base in _FEMININE_LABELS
                or re.search(r"(?:a|ão|dade|gem|ie|ção|são|ua)$", base) is not None)
    article = ("a" if feminine else "o") + ("s" if plural else "")
    return label, article, plural


def _lower_first(heading: str) -> str:
    """Lower-case a heading's first letter unless it starts an acronym or a name ("OEA")."""
    if len(heading) > 1 and heading[1].islower():
        return heading[0].lower() + heading[1:]
    return heading


class _Builder:
    def __init__(self, article: dict[str, Any], cfg: InstructionConfig):
        self.article = article
        self.cfg = cfg
        self.title = article["title"]
        self.records: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()
        self._sentences: list[str] | None = None
        self._min_output = cfg.min_output_chars
        self._max_output = cfg.max_output_chars * 1.5
        self._max_input = cfg.max_input_chars * 1.5

    @property
    def sentences(self) -> list[str]:
        """The article's prose sentences, split once (see :func:`prose_sentences`)."""
        if self._sentences is None:
            self._sentences = prose_sentences(self.article)
        return self._sentences

    def add(self, task: str, instruction: str, output: str, input: str = "",
            fact: str | None = None) -> None:
        self.add_phrasings(task, (instruction,), output, input, fact)

    def add_phrasings(self, task: str, instructions: Iterable[str], output: str,
                      input: str = "", fact: str | None = None, answer: str | None = None,
                      ) -> None:
        """One answer asked several ways: a record per instruction not asked before, the
        answer and input checked once for all of them. ``answer``: the fact's value as the
        article writes it ("Darcy Vargas", "1896"), kept on the record (reading tasks find
        the passage that holds it)."""
        output = output.strip()
        input = input.strip()
        if not self._min_output <= len(output) <= self._max_output or len(input) > self._max_input:
            return
        seen, title, append = self._seen, self.title, self.records.append
        for instruction in instructions:
            key = (instruction, input)
            if key in seen:
                continue
            seen.add(key)
            rec = {"id": record_id(task, instruction, input), "instruction": instruction,
                   "input": input, "output": output, "source_title": title, "task": task}
            if fact:
                rec["fact"] = fact
            if answer:
                rec["answer"] = answer
            append(rec)

    def phrasings(self, options: Sequence[str], n: int | None = None) -> Sequence[str]:
        n = self.cfg.paraphrases if n is None else n
        return options[: max(1, n)]


def _lead(article: dict[str, Any]) -> str:
    sections = article.get("sections") or []
    if sections and sections[0].get("level", 0) == 0 and not sections[0].get("heading"):
        return sections[0].get("text", "")
    return ""


def _definition_options(kind: str) -> list[str]:
    if kind == "person":
        return ["Quem foi {T}?", "Fale brevemente sobre {T}.", "O que você sabe sobre {T}?",
                "Explique quem foi {T}.", "Quem era {T}?"]
    if kind == "event":
        return ["O que foi {T}?", "Fale brevemente sobre {T}.", "O que você sabe sobre {T}?",
                "Explique o que foi {T}.", "Do que se trata {T}?"]
    return ["O que é {T}?", "Fale brevemente sobre {T}.", "O que você sabe sobre {T}?",
            "Explique o que é {T}.", "Do que se trata {T}?"]


def _definition(b: _Builder) -> str:
    return take_sentences(_lead(b.article), min(b.cfg.max_output_chars, 400), max_sentences=2)


def _definition_and_summary(b: _Builder, tasks: set[str]) -> None:
    lead = _lead(b.article)
    if not lead:
        return
    title = b.title
    definition = _definition(b)
    if "definition" in tasks and definition:
        b.add_phrasings("definition", [q.format(T=title) for q in
                                       b.phrasings(_definition_options(_kind(b.article)))],
                        definition, fact=f"definition:{title}")
        _alias_definitions(b, definition)
    if "summary" in tasks:
        sentences = list(prose_sentences_of(lead))
        used, summary = pack_sentences(sentences, 0, b.cfg.max_output_chars)
        if summary and summary != definition:
            b.add_phrasings("summary", [q.format(T=title) for q in b.phrasings(
                ["Resuma o artigo sobre {T}.", "Faça um resumo sobre {T}."], 2)], summary)
        # a long lead (most of a prose-only article) goes on like a long section
        _continue(b, "summary", sentences, used, f"Continue o texto do artigo {title}.")


def _alias_definitions(b: _Builder, definition: str) -> None:
    """The definition asked under the article's other names (its redirects)."""
    question = _definition_options(_kind(b.article))[0]
    for alias in [a for a in (b.article.get("aliases") or []) if a != b.title][:2]:
        b.add("definition", question.format(T=alias), definition, fact=f"definition:{b.title}")


def alias_instructions(article: dict[str, Any], cfg: InstructionConfig) -> list[dict[str, Any]]:
    """Only the records that depend on the article's aliases (known once the dump is read)."""
    if "definition" not in cfg.tasks or not article.get("aliases"):
        return []
    b = _Builder(article, cfg)
    definition = _definition(b)
    if definition:
        _alias_definitions(b, definition)
    return b.records


def _sections(b: _Builder) -> None:
    sections = [s for s in (b.article.get("sections") or [])[1:] if s.get("text")]
    title = b.title
    limit = b.cfg.max_output_chars
    for section in sections[: b.cfg.max_sections]:
        heading = section["heading"]
        sentences = list(prose_sentences_of(section["text"]))  # table rows have their own task
        used, first = pack_sentences(sentences, 0, limit)
        if not first:
            continue
        options = [f'O que o artigo sobre {title} diz em "{heading}"?',
                   f"Fale sobre {_lower_first(heading)} de {title}.",
                   f'Sobre {title}, explique o tópico "{heading}".']
        b.add_phrasings("section", b.phrasings(options, min(2, b.cfg.paraphrases)), first)
        _continue(b, "section", sentences, used, f'Continue o texto do artigo {title}, seção "{heading}".')


def _continue(b: _Builder, task: str, sentences: list[str], used: int, instruction: str) -> None:
    """The rest of a long lead or section: continuation records, each with its own context."""
    limit = b.cfg.max_output_chars
    while used < len(sentences):
        end, part = pack_sentences(sentences, used, limit)
        if not part:
            used += 1  # an over-long sentence or a bare list introduction: step past it
            continue
        context = " ".join(sentences[max(0, used - 2):used])
        b.add(task, instruction, part, input=context[-b.cfg.max_input_chars:])
        used = end


def _may_hold_table_rows(text: str) -> bool:
    """False when no line of ``text`` can be a table row ("Col: value; Col: value"): most
    sections, which then skip the per-line match."""
    return ": " in text and "; " in text


@functools.lru_cache(maxsize=256)
def _prose(text: str) -> str:
    """A section's text without its table rows and their captions (once per text: the sentence
    split and the passage task both read it)."""
    if not _may_hold_table_rows(text):
        return text
    lines = text.split("\n")
    row = [_TABLE_LINE.match(line) is not None for line in lines] + [False]
    keep = []
    for i, line in enumerate(lines):
        if row[i]:
            continue
        if row[i + 1] and line and line[-1] not in ".!?…:;":
            continue  # the table's caption
        keep.append(line)
    return "\n".join(keep)


def _infobox(b: _Builder) -> None:
    title = b.title
    for key, value in (b.article.get("infobox") or {}).items():
        norm = key.strip().lower()
        if (norm in _SKIP_FIELDS or norm.startswith("nome") or len(value) > 160
                or not value.strip() or value.strip().casefold() == title.casefold()):
            continue
        spec = _FIELD_INDEX.get(norm) or _FIELD_INDEX.get(norm.replace(" ", "_"))
        if spec:
            questions, answer = spec
        else:
            label, art, plural = _field_label(key)
            if plural:
                questions = [f"Quais são {art} {label} de {{T}}?", f"Quais {art} {label} de {{T}}?",
                             f"Informe {art} {label} de {{T}}.", f"{{T}}: quais são {art} {label}?"]
            else:
                questions = [f"Qual é {art} {label} de {{T}}?", f"Qual {art} {label} de {{T}}?",
                             f"Informe {art} {label} de {{T}}.", f"{{T}}: qual é {art} {label}?"]
            answer = f"{art.capitalize()} {label} de {{T}}: {{v}}."
        value = value.strip().rstrip(".")
        output = answer.format(T=title, v=value)
        b.add_phrasings("infobox", [q.format(T=title) for q in b.phrasings(questions)], output,
                        fact=f"infobox:{title}:{key}", answer=value)


def _table_blocks(text: str) -> list[list[list[tuple[str, str]]]]:
    """The tables of a section's text: runs of consecutive "Col: value; Col: value" lines, each
    row a list of (column, value) pairs."""
    blocks: list[list[list[tuple[str, str]]]] = []
    current: list[list[tuple[str, str]]] = []
    for line in text.split("\n"):
        m = _TABLE_LINE.match(line)
        if not m:
            if current:
                blocks.append(current)
                current = []
            continue
        pairs = [(m.group(1).strip(), m.group(2).strip())]
        for pair in m.group(3).split("; ")[1:]:
            col, _, val = pair.partition(": ")
            pairs.append((col.strip(), val.strip()))
        current.append(pairs)
    if current:
        blocks.append(current)
    return blocks


def _key_column(rows: list[list[tuple[str, str]]]) -> str:
    """The column that names a table's rows: the one with the most distinct values, the first
    of those on a tie (so the first column whenever its values are distinct). A medal table's
    first column repeats "Bronze"; keyed by it, every bronze row after the first would be asked
    the same questions and dropped; its athletes repeat less. Rows whose key value repeats an
    earlier row's are still asked once (the first)."""
    cells = [dict(row) for row in rows]
    columns = [col for col, _ in rows[0]]
    distinct = [len({c[col] for c in cells if c.get(col)}) for col in columns]
    return columns[distinct.index(max(distinct))]


def _tables(b: _Builder) -> None:
    title = b.title
    for section in (b.article.get("sections") or []):
        text = section.get("text", "")
        if not _may_hold_table_rows(text):
            continue
        rows = 0
        for table in _table_blocks(text):
            key_col = _key_column(table)
            for row in table:
                if rows >= b.cfg.max_table_rows:
                    break
                rows += 1
                cells = dict(row)
                key_val = cells.get(key_col, "")
                if not key_val:
                    continue
                for col, val in row:
                    if col == key_col or not col or not val:
                        continue
                    options = [f"No artigo sobre {title}, qual é o valor de \"{col}\" para {key_val}?",
                               f"Segundo a tabela de {title}, o que consta em \"{col}\" para {key_val}?",
                               f'Em {title}, qual é "{col}" quando "{key_col}" é {key_val}?']
                    output = f"{key_val} — {col}: {val}."
                    b.add_phrasings("table", b.phrasings(options), output,
                                    fact=f"table:{title}:{key_val}:{col}", answer=val)


@functools.lru_cache(maxsize=256)
def prose_sentences_of(text: str) -> tuple[str, ...]:
    """The sentences of a lead's or section's text, table rows aside (split once per text: the
    summary, section, fact and coverage passes all read them)."""
    return tuple(sentences_of(_prose(text)))


def prose_sentences(article: dict[str, Any]) -> list[str]:
    """Every sentence of an article's prose, lead and sections, without table rows: what the
    instruction set must carry, and what :func:`sentence_coverage` counts."""
    out: list[str] = []
    for section in article.get("sections") or []:
        if section.get("text"):
            out.extend(prose_sentences_of(section["text"]))
    return out


def _facts(b: _Builder) -> None:
    """Fact-bearing sentences asked as questions that name the subject (see ingest/facts.py)."""
    from ingest.facts import answer_sentence, sentence_facts, subject_of

    subj = subject_of(b.article, _lead(b.article))
    cfg = b.cfg
    short = cfg.fact_answer == "short"
    for sentence in b.sentences:
        if len(sentence) > cfg.max_fact_sentence_chars or sentence.endswith(":"):
            continue
        facts = sentence_facts(sentence, subj, cfg.facts_per_sentence)
        if not facts:
            continue
        answer = answer_sentence(sentence, subj)
        tag = record_id("", sentence, "")[:6]  # tells apart the sentences of one article
        for fact in facts:
            b.add_phrasings("fact", b.phrasings(fact.questions),
                            fact.short if short and fact.short else answer,
                            fact=f"prose:{b.title}:{fact.kind}:{fact.span}:{tag}",
                            answer=fact.span)


def sentence_coverage(article: dict[str, Any], records: list[dict[str, Any]],
                      cfg: InstructionConfig, sentences: list[str] | None = None,
                      splits: list[str] | None = None) -> dict[str, Any]:
    """How much of an article's prose the records carry: its sentences, those found whole in the
    output of a train-split record and of any record, and how many phrasings each fact got."""
    from ingest.facts import answer_sentence, subject_of

    # A fact record's output is one sentence: looked up whole. Other outputs join sentences with
    # a space or a newline: a sentence is carried when it occurs in one of them whole.
    whole_train: set[str] = set()
    whole_val: set[str] = set()
    train_text: list[str] = []
    val_text: list[str] = []
    facts: dict[str, int] = {}
    if splits is None:
        splits = splits_of([rec["id"] for rec in records], cfg.val_fraction, cfg.split_salt)
    for rec, split in zip(records, splits, strict=True):
        if split == "train":
            if rec["task"] == "fact":
                whole_train.add(rec["output"])
            else:
                train_text.append(rec["output"])
            fact = rec.get("fact")
            if fact:
                facts[fact] = facts.get(fact, 0) + 1
        elif rec["task"] == "fact":
            whole_val.add(rec["output"])
        else:
            val_text.append(rec["output"])
    whole_any = whole_train | whole_val
    joined_train = "\n".join(train_text)
    joined_any = joined_train + "\n" + "\n".join(val_text)
    sentences = prose_sentences(article) if sentences is None else sentences
    subj = subject_of(article, _lead(article)) if sentences else None
    train = any_ = 0
    for sentence in sentences:
        alt = answer_sentence(sentence, subj)  # the sentence itself unless it opens with "Ele"...
        if alt in whole_train or sentence in whole_train:
            train += 1
            any_ += 1
            continue
        if alt == sentence:  # (one search where the two texts are one)
            in_train = sentence in joined_train
            in_any = in_train or sentence in whole_any or sentence in joined_any
        else:
            in_train = sentence in joined_train or alt in joined_train
            in_any = (alt in whole_any or sentence in whole_any or sentence in joined_any
                      or alt in joined_any)
        train += in_train
        any_ += in_any
    return {"sentences": len(sentences), "in_train": train, "in_any": any_,
            "phrasings": Counter(min(n, 5) for n in facts.values())}


def _passage_title(b: _Builder) -> None:
    title = b.title
    name_re = None  # compiled for the first passage (most articles have one; some none)
    picked = 0
    for section in (b.article.get("sections") or [])[1:]:
        for paragraph in _prose(section.get("text", "")).split("\n"):
            if len(paragraph) < 150:
                continue
            passage = take_sentences(paragraph, b.cfg.max_input_chars)
            if name_re is None:
                name_re = re.compile(re.escape(re.sub(r"\s*\([^)]*\)$", "", title)), re.IGNORECASE)
            passage = name_re.sub("___", passage)
            b.add("passage_title", "De qual artigo da Wikipédia é este trecho?", title,
                  input=passage)
            picked += 1
            break
        if picked >= 2:
            return


def article_instructions(article: dict[str, Any], cfg: InstructionConfig) -> list[dict[str, Any]]:
    """All instruction records of one article (deduplicated within it)."""
    b = _Builder(article, cfg)
    return _build(b, cfg)


def article_records(article: dict[str, Any], cfg: InstructionConfig,
                    ) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """The instruction records of one article, the split of each, and their
    :func:`sentence_coverage`."""
    b = _Builder(article, cfg)
    records = _build(b, cfg)
    splits = splits_of([rec["id"] for rec in records], cfg.val_fraction, cfg.split_salt)
    return records, splits, sentence_coverage(article, records, cfg, b.sentences, splits)


def _build(b: _Builder, cfg: InstructionConfig) -> list[dict[str, Any]]:
    tasks = set(cfg.tasks)
    if tasks & {"definition", "summary"}:
        _definition_and_summary(b, tasks)
    if "section" in tasks:
        _sections(b)
    if "infobox" in tasks:
        _infobox(b)
    if "table" in tasks:
        _tables(b)
    if "fact" in tasks:
        _facts(b)
    if "passage_title" in tasks:
        _passage_title(b)
    return b.records


def dedup_key(rec: dict[str, Any]) -> int:
    """Records asking the same thing (task, instruction, input: the record id) are duplicates."""
    return int(rec["id"], 16)


_TASK_SPLIT, _TASK, _CHARS = operator.itemgetter(2, 1), operator.itemgetter(2), operator.itemgetter(3)


class InstructionStats:
    """Counts per task and split, and duplicates removed."""

    def __init__(self, data: dict[str, Any] | None = None):
        data = data or {}
        self.by_task: dict[str, dict[str, int]] = data.get("by_task", {})
        self.duplicates_removed: int = data.get("duplicates_removed", 0)
        cov = data.get("coverage", {})
        self.sentences: int = cov.get("sentences", 0)
        self.sentences_in_train: int = cov.get("sentences_in_train", 0)
        self.sentences_in_any: int = cov.get("sentences_in_any", 0)
        self.articles_without_sentences: int = cov.get("articles_without_sentences", 0)
        self.fact_phrasings: Counter = Counter(
            {int(k): v for k, v in cov.get("facts_by_phrasings", {}).items()})

    def add(self, task: str, split: str, output_chars: int) -> None:
        entry = self.by_task.setdefault(task, {"train": 0, "val": 0, "output_chars": 0})
        entry[split] += 1
        entry["output_chars"] += output_chars

    def add_rows(self, rows: list[tuple[int, str, str, int]]) -> None:
        """:meth:`add` for each (key, split, task, output chars) row of an article, counted by
        C-level iteration (the writer counts ~150 rows an article)."""
        for (task, split), n in Counter(map(_TASK_SPLIT, rows)).items():
            self.by_task.setdefault(task, {"train": 0, "val": 0, "output_chars": 0})[split] += n
        for task, group in itertools.groupby(rows, _TASK):  # an article's records come task by task
            self.by_task[task]["output_chars"] += sum(map(_CHARS, group))

    def add_coverage(self, coverage: dict[str, Any]) -> None:
        self.sentences += coverage["sentences"]
        self.sentences_in_train += coverage["in_train"]
        self.sentences_in_any += coverage["in_any"]
        self.articles_without_sentences += coverage["sentences"] == 0
        self.fact_phrasings.update(coverage["phrasings"])

    def coverage(self) -> dict[str, Any]:
        def share(n: int) -> float | None:
            return round(n / self.sentences, 4) if self.sentences else None

        return {"sentences": self.sentences, "sentences_in_train": self.sentences_in_train,
                "sentences_in_any": self.sentences_in_any,
                "sentence_coverage_train": share(self.sentences_in_train),
                "sentence_coverage_any": share(self.sentences_in_any),
                "articles_without_sentences": self.articles_without_sentences,
                # facts (of the prose, infobox and tables) by the number of train-split phrasings
                # asking them; 5 stands for 5 or more
                "facts_by_phrasings": {str(k): v for k, v in sorted(self.fact_phrasings.items())}}

    def to_dict(self) -> dict[str, Any]:
        return {"by_task": self.by_task, "duplicates_removed": self.duplicates_removed,
                "coverage": self.coverage()}


def generate(articles: Iterable[dict[str, Any]], cfg: InstructionConfig,
             stats: InstructionStats | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(split, record) for every article, deduplicated across the whole set."""
    seen: set[int] = set()
    stats = stats if stats is not None else InstructionStats()
    for article in articles:
        records, splits, coverage = article_records(article, cfg)
        stats.add_coverage(coverage)
        for rec, split in zip(records, splits, strict=True):
            key = dedup_key(rec)
            if key in seen:
                stats.duplicates_removed += 1
                continue
            seen.add(key)
            stats.add(rec["task"], split, len(rec["output"]))
            yield split, rec

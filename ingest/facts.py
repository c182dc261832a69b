"""Fact questions from prose: each fact-bearing sentence asked the way a person would ask it.

Most ptwiki articles are prose (a lead and a few paragraphs, no infobox, no table), so the facts
a question file asks about live in running sentences. For every sentence this module finds the
spans a question can be about — a date ("em 10 de maio de 1789", "no século XVIII", "na década
de 1780"), a quantity ("13,29 quilômetros", "3,5 milhões de habitantes"), a place after "em/no/na",
an agent after "por" — and turns the sentence around that span into questions in several
phrasings ("Quando Tiradentes foi preso?", "Em que data Tiradentes foi preso?", "Diga em que data
Tiradentes foi preso."). Every question names the article's subject, so it is answerable without
the article; a sentence whose own subject is someone else gets the subject as a topic ("Sobre a
Inconfidência Mineira, quando a conspiração foi denunciada?"). Sentences with names but no span
a wh-question fits are asked about the name ("O que o artigo sobre X diz sobre Y?").

The answer is the sentence itself (its leading "Ele/Ela" replaced by the subject), or, with
``fact_answer: short``, the span alone ("Em 10 de maio de 1789."): a whole sentence carries
every fact it holds — the one asked and the others a test may ask — in each phrasing.

Rules only: no Portuguese tagger or parser that works offline ships on the package index (no
spaCy model for Portuguese, stanza and NLTK download theirs), and the Wikimedia segmenter
(sentencex) splits "D. Pedro", "séc. XIX" and "a.C." — see :func:`ingest.instructions.split_sentences`.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field

from ingest.instructions import TITLES

MONTHS = ("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro",
          "outubro", "novembro", "dezembro")
_MONTH = "(?:" + "|".join(MONTHS) + ")"
_YEAR = r"(?:1\d{3}|20\d{2}|[1-9]\d{2}(?= a\.C\.| d\.C\.))(?: (?:a\.C\.|d\.C\.))?"
_DAY = r"(?:[1-9]|[12]\d|3[01]|1\.?º|1°)"
# the preposition (kept with the span: it is what the question word replaces)
_DATE_PREP = r"(?:em|no dia|no ano de|no início de|no fim de|em meados de|a partir de|desde|até|no|na|nos|nas)"

# Each pattern opens with a lookahead on its first letter: the engine then skips most positions
# at once (3x faster on encyclopedic prose than starting with \b or a lookbehind).
_DATE = re.compile(
    rf"(?=[eEnNaAdD])\b(?P<prep>{_DATE_PREP}) (?P<span>(?P<full>{_DAY} de {_MONTH} de {_YEAR})"
    rf"|(?P<month>{_MONTH} de {_YEAR})"
    r"|(?:(?:o|a) )?(?P<century>(?:século|séc\.) [IVXL]+(?: (?:a\.C\.|d\.C\.))?)"
    r"|(?P<decade>década de (?:\d{4}|\d0))"
    rf"|(?P<year>{_YEAR}))(?![\d.,]\d)",
    re.IGNORECASE)
_MULTIPLIER = r"(?:mil|milhão|milhões|bilhão|bilhões|trilhão|trilhões)"
_NUMBER = re.compile(
    r"(?=[\dcamqaCAMQ])(?<![\w.,])(?P<span>(?:(?:cerca de|aproximadamente|mais de|menos de|quase|até) )?(?P<num>\d{1,3}(?:[.\u00a0 ]\d{3})+(?:,\d+)?|\d+(?:,\d+)?)"
    rf"(?: (?P<mult>{_MULTIPLIER}))?(?: de)? (?P<unit>[a-zà-ú²³]+(?:²|³)?"
    r"(?: de (?!(?:o|a|os|as|um|uma)\b)[a-zà-ú]{3,})?))(?=[\s,.;:)]|$)")
_NAME = r"[A-ZÁÂÃÀÉÊÍÓÔÕÚÇ][\wÀ-ú'’-]*(?:\s(?:(?:de|da|do|das|dos|e|del|von|van)\s)?[A-ZÁÂÃÀÉÊÍÓÔÕÚÇ0-9][\wÀ-ú'’-]*)*"
_PLACE = re.compile(rf"(?=[en])\b(?P<prep>em|no|na|nos|nas) (?P<span>{_NAME})")
_AGENT = re.compile(rf"(?=[fées])\b(?P<verb>(?:foi|foram|é|são|era|eram|seria|será) \w+[ao]s?) (?P<prep>por|pelo|pela) (?P<span>{_NAME})")
_NAME_AT = re.compile(_NAME)
_HALF_NAME = re.compile(r"\s(?:e|de|da|do|dos|das)\s[A-Z]$")
_NAME_ANY = re.compile(rf"(?=[A-ZÁÂÃÀÉÊÍÓÔÕÚÇ])(?<!^)(?<![.!?] )(?<![\w'’-])(?P<span>{_NAME})")

# words that never make a unit ("em 1822 e ..." is a year; "3 de ..." a date)
_NOT_UNITS = frozenset("a o as os e em de do da dos das no na nos nas um uma que por para com se "
                       "ao aos à às pelo pela foi é era são sobre contra entre até após sob desde "
                       "como mais menos x ou mas".split())
_FRONTERS = frozenset(
    "em no na nos nas desde até após depois antes durante com sem segundo conforme quando enquanto "
    "embora apesar para por entre ao à sob nesse nessa neste nesta naquele naquela hoje então "
    "ainda já além pouco logo mais anos meses dias semanas décadas séculos".split())
_SUBORDINATORS = frozenset("quando enquanto embora apesar após depois antes durante conforme "
                           "segundo".split())
_PRONOUNS = ("Ele ", "Ela ", "Eles ", "Elas ")
_NOT_VERB_START = frozenset(
    "a o as os um uma uns umas em no na nos nas de do da dos das este esta estes estas esse essa "
    "esses essas aquele aquela seu sua seus suas com por para pelo pela entre após durante sob "
    "sobre segundo como quando onde ao aos à às desde até mas e ou também já ainda nesse nessa "
    "neste nesta naquele naquela isso isto ela ele eles elas hoje então depois antes perto longe "
    "cerca ali aqui lá além apenas só sobretudo atualmente inicialmente posteriormente finalmente "
    "mais muito muitos muitas vários várias alguns algumas outros outras cada todo toda todos "
    "todas nenhum nenhuma ambos ambas tal tais".split())
# a clause that starts with a verb has its subject dropped (Portuguese is pro-drop): "Foi preso em
# 1789." Past-tense endings and the common irregular verbs; "-ia" is left out ("Maria", "Bahia").
_VERB_END = re.compile(r"(?:ou|eu|iu|aram|eram|iram|ava|avam)(?:-(?:se|o|a|os|as|lhe))?$")
_VERBS = frozenset(
    "foi foram é são era eram tem têm teve tinha tinham há havia houve fez faz fica ficou está "
    "esteve estava possui possuía pertence pertencia vive vivia viveu existe existia dizia fazia "
    "seguia serve serviu deu veio viu pôde quis disse trouxe compõe recebe abriga reúne "
    "mede conta chega nasce morre".split())
# A word of a (case-folded) clause that ends like a verb (_VERB_END): one scan of the whole
# clause instead of a test per word.
_VERB_END_IN = re.compile(r"(?:ou|eu|iu|aram|eram|iram|ava|avam)(?:-(?:se|o|a|os|as|lhe))?(?!\S)")
_MONTH_OR_WEEKDAY = re.compile(rf"^(?:{_MONTH}|[Ss]egunda|[Tt]erça|[Qq]uarta|[Qq]uinta|[Ss]exta|"
                               r"[Ss]ábado|[Dd]omingo)\b", re.IGNORECASE)


# abbreviated titles that are part of the name after them ("D. Pedro II", "Dr. Oswaldo")
_TITLES = frozenset(f"{t}." for t in TITLES)
# "século XIII", "séculos XVIII e XIX": Roman numerals are numbers, not names to ask about
# ("Pio XII", "Dom Pedro II" are names)
_ROMAN = re.compile(r"[IVXLCDM]+(?:(?:,| e| a| ou) [IVXLCDM]+)*")

_RELATIVE = re.compile(r"(?:,|;|:) (?:onde|que|quando|cujo|cuja|cujos|cujas|o qual|a qual|os quais|as quais)\b")
_LIST_AFTER = re.compile(r"\s+(?:e|ou)\s")
_LIST_BEFORE = re.compile(r"\s(?:e|ou)\s*$")
_CLAUSE_END = re.compile(r"(?:,|;|:| —| –) ")
_CONJUNCTION = re.compile(r"(?:, e |, mas |; |: )")
# (\s\s* rather than \s+: a pattern that opens with a character class lets the engine skip in C to
# the characters that can start a match, instead of trying the pattern at every position)
_SPACE_PUNCT = re.compile(r"\s\s*([,.;:])")
# The match replaced by its first group: a callable, because a "\1" template costs a Python-level
# call on every sub, match or not.
_FIRST_GROUP = operator.itemgetter(1)
_SPACES = re.compile(r"\s\s+")
_TRAILING_CONJ = re.compile(r"(?:,? (?:e|ou|mas))+$")
_CONJ_ENDS = (" e", " ou", " mas", " e\n", " ou\n", " mas\n")  # how a _TRAILING_CONJ match ends
# a noun phrase opened by an article: with no verb, the subject of the clause that goes on
_SUBJECT_PHRASE = re.compile(r"(?:[Uu]ma?s?|[Oo]s?|[Aa]s?(?! partir)) \w")
_FRONTED = re.compile(r"^([^,]{2,90}), (.+)$")
_PLURAL_VERB = re.compile(r"^\S*(?:ram|ram-se|são|eram|foram|estão|têm)\b", re.IGNORECASE)
_YEAR_LIKE = re.compile(r"1\d{3}|20\d{2}")
_HANGING_PREP = re.compile(r"\b(?:de|do|da|em|no|na|a|o|com|por|para|e),")
_DIGIT = re.compile(r"\d")
_ERA = re.compile(r"[Ss]éc(?:ulo|\.)|[Dd]écada")
MAX_BODY_CHARS = 110  # a question longer than ~150 characters is not one a person asks


@dataclass(frozen=True)
class Fact:
    """One question span of a sentence: its kind, the span and the phrasings asked about it."""

    kind: str  # date, quantity, place, agent, name
    span: str
    questions: tuple[str, ...]
    short: str  # the short answer: "Em 10 de maio de 1789."


@dataclass(frozen=True)
class Subject:
    """How a sentence names the article's subject: the title with its article, if it takes one."""

    title: str
    article: str  # "o", "a", "os", "as" or ""
    names: tuple[str, ...]  # strings that count as naming the subject (title, aliases, short name)
    # the names case-folded once: named_in runs for every span of every sentence
    folded: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", tuple(n.casefold() for n in self.names))

    @property
    def np(self) -> str:
        """"o Pantanal", "Lisboa"."""
        return f"{self.article} {self.title}" if self.article else self.title

    def about(self) -> str:
        """"Sobre o Pantanal"."""
        return f"Sobre {self.np}"

    def named_in(self, text: str) -> bool:
        low = text.casefold()
        return any(n in low for n in self.folded)


def subject_of(article: dict, lead: str) -> Subject:
    """The subject of an article, with the article its lead uses before the title ("O Pantanal é")."""
    title = article["title"]
    short = re.sub(r"\s*\([^)]*\)$", "", title)
    art = ""
    m = re.match(r"^(O|A|Os|As) ", lead)
    if m and lead[m.end():].casefold().startswith(short.casefold()):
        art = m.group(1).lower()
    names = {title, short, *[a for a in (article.get("aliases") or []) if len(a) > 3]}
    return Subject(short, art, tuple(sorted(names, key=len)))


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _resolve_pronoun(sentence: str, subj: Subject) -> str:
    """"Ele morreu em 1792." -> "Tiradentes morreu em 1792." (answers and questions name the subject)."""
    if not sentence.startswith(_PRONOUNS):
        return sentence
    for p in _PRONOUNS:
        if sentence.startswith(p):
            return _sentence_case(subj.np) + " " + sentence[len(p):]
    return sentence


def _first_word(clause: str) -> str:
    """"function" (an article, preposition...), "verb" (the subject was dropped) or "name"."""
    first = clause.split(" ", 1)[0].strip(",;:")
    low = first.casefold()
    if low in _NOT_VERB_START:
        return "function"
    if low in _VERBS or (first.isalpha() or "-" in first) and _VERB_END.search(low):
        return "verb"
    return "name"


def _explicit_subject(clause: str) -> str | None:
    """The subject a clause names before its verb, when it opens (after fronted adverbials)
    with an article ("Sob sua gestão, o instituto ampliou-se ..." -> "o instituto")."""
    main = clause.rsplit(",", 1)[-1].strip()
    if not _SUBJECT_PHRASE.match(main):
        return None
    words = main.split()
    for i, word in enumerate(words[1:7], start=1):
        if _first_word(word) == "verb":
            return " ".join(words[:i])
    return None


def _clause_without(sentence: str, start: int, end: int) -> str:
    """The sentence with [start, end) removed, commas around it mended, final stop dropped."""
    before, after = sentence[:start], sentence[end:]
    if _LIST_AFTER.match(after) or _LIST_BEFORE.search(before):
        return ""  # one of a list ("na Barra e na zona sul"): the question would name the rest
    if _RELATIVE.search(before):
        return ""  # the span sits in a relative clause: a wh-question would ask the wrong thing
    before = before.rstrip()
    after = after.lstrip()
    if before.endswith(",") and after.startswith(","):
        head = before[:-1].rsplit(",", 1)[-1].strip()
        if _SUBJECT_PHRASE.match(head) and not has_verb(head):
            # between commas inside the subject ("um atentado na Rua Tonelero, em Copacabana,
            # matou ..."): the subject stays
            before, after = before[:-1], after[1:].lstrip()
        else:
            # an adverbial between commas ("..., em 1938, foi elevado a município") belongs to
            # the clause that follows it
            before, after = "", after[1:].lstrip()
    if not before and after.startswith(","):
        after = after[1:].lstrip()  # "Em 1775, ele ..." -> "ele ..."
    elif before.endswith(",") and (after.startswith(",") or not after or after[0] in ".;"):
        before = before[:-1]  # "..., em 1789, ..." -> "... ..."
    # a long sentence: keep the clauses up to the one that held the span
    cut = _CLAUSE_END.search(after)
    if cut and (cut.start() == 0 or len(before) + cut.start() > 20 or not before):
        after = after[:cut.start()]
    # a span in a later coordinated clause: that clause alone ("..., e o vão principal ... tem")
    conj = list(_CONJUNCTION.finditer(before))
    if conj and len(before[conj[-1].end():].split()) >= 2:
        first, before = before[:conj[-1].start()], before[conj[-1].end():]
        subject = _explicit_subject(first)
        if subject and _first_word(before) == "verb":
            # "o instituto ampliou-se ..., e passou a se chamar X": the same subject goes on
            before = f"{subject} {before}"
    clause = f"{before} {after}".strip()
    clause = _SPACE_PUNCT.sub(_FIRST_GROUP, clause)
    clause = _SPACES.sub(" ", clause).strip()
    clause = clause.rstrip(" .;:!…")
    if clause.endswith(_CONJ_ENDS):  # "... de Campo Belo e" -> "... de Campo Belo"
        clause = _TRAILING_CONJ.sub("", clause)
    return clause


def _front_to_back(clause: str) -> str:
    """"Em 1775, X ingressou ..." -> "X ingressou ..., em 1775": the question word must meet the
    main clause, not a fronted adverbial or a subordinate clause."""
    m = _FRONTED.match(clause)
    if not m:
        return clause
    head = m.group(1)
    first = head.split(" ", 1)[0].casefold()
    short = len(head.split()) <= 7
    if first in _SUBORDINATORS or first.endswith("ndo") or (short and first in _FRONTERS):
        return f"{m.group(2)}, {head[0].lower()}{head[1:]}"
    return clause


def _as_question_body(clause: str, subj: Subject, span_first: bool = False) -> tuple[str, bool]:
    """(the clause ready to follow a question word, whether it names the subject). A span that
    opened the sentence was its subject ("88 gols foram marcados"): no subject is put back."""
    if not clause:
        return "", False
    clause = _front_to_back(_front_to_back(clause))
    if clause.startswith(_PRONOUNS):
        clause = subj.np + " " + clause.split(" ", 1)[1]
    else:
        kind = _first_word(clause)
        plural = _PLURAL_VERB.match(clause)
        if kind == "verb" and not span_first and not plural:
            clause = subj.np + " " + clause[0].lower() + clause[1:]  # "Foi preso" -> "X foi preso"
        elif kind in ("function", "verb"):
            clause = clause[0].lower() + clause[1:]
    return clause, subj.named_in(clause)


def _ask(word: str, body: str, named: bool, subj: Subject) -> str:
    q = f"{word} {body}?"
    if not named:
        q = f"{subj.about()}, {word[0].lower()}{word[1:]} {body}?"
    return _sentence_case(q)


def _tell(word: str, body: str, named: bool, subj: Subject) -> str:
    lead = f"Diga {word[0].lower()}{word[1:]} {body}."
    return lead if named else f"{subj.about()}: diga {word[0].lower()}{word[1:]} {body}."


_DATE_WORDS = {"full": ("Quando", "Em que data"), "month": ("Quando", "Em que mês e ano"),
               "year": ("Quando", "Em que ano"), "century": ("Quando", "Em que século"),
               "decade": ("Quando", "Em que década")}


def _date_facts(sentence: str, subj: Subject) -> list[Fact]:
    facts = []
    for m in _DATE.finditer(sentence):
        full, month, century, decade = m.group("full", "month", "century", "decade")
        kind = ("full" if full else "month" if month else "century" if century
                else "decade" if decade else "year")
        prep = m.group("prep").lower()
        if prep in {"no", "na", "nos", "nas"} and kind not in {"century", "decade"}:
            continue  # "no 1500" is not Portuguese; "na 1822" neither
        if prep in {"desde", "até", "a partir de"}:
            unit = _DATE_WORDS[kind][1].split(" ", 2)[2]  # "ano", "data", "século"...
            words = (f"{_sentence_case(prep)} quando", f"{_sentence_case(prep)} que {unit}")
        else:
            words = _DATE_WORDS[kind]
        body, named = _as_question_body(_clause_without(sentence, m.start(), m.end()), subj)
        if not _good_body(body):
            continue
        short = _sentence_case(f"{m.group('prep')} {m.group('span')}.")
        qs = (_ask(words[0], body, named, subj), _ask(words[1], body, named, subj),
              _tell(words[1], body, named, subj))
        facts.append(Fact("date", m.group("span"), qs, short))
    return facts


def _quantity_facts(sentence: str, subj: Subject) -> list[Fact]:
    facts = []
    for m in _NUMBER.finditer(sentence):
        unit = m.group("unit")
        head = unit.split(" ", 1)[0]
        if head in _NOT_UNITS or head in MONTHS or len(head) < 2:
            continue
        num = m.group("num")
        if _YEAR_LIKE.fullmatch(num) and not m.group("mult"):
            continue  # a year, not a count
        end = m.end("span")
        body, named = _as_question_body(_clause_without(sentence, m.start("span"), end), subj,
                                        span_first=_span_is_subject(sentence[:m.start("span")]))
        if not _good_body(body):
            continue
        how_many = "Quantas" if head.endswith(("a", "as")) and not head.endswith("mas") else "Quantos"
        if head in {"%", "porcento"}:
            continue
        qs = (_ask(f"{how_many} {unit}", body, named, subj),
              _ask(f"Qual é o número de {unit}", _de_body(body), named, subj),
              _tell(f"{how_many.lower()} {unit}", body, named, subj))
        facts.append(Fact("quantity", m.group("span"), qs, _sentence_case(m.group("span")) + "."))
    return facts


def _span_is_subject(before: str) -> bool:
    """The span opens the sentence, or follows only its verb ("Foram marcados 88 gols"): it is
    the subject, and the article's subject must not be put in front of the verb."""
    words = before.split()
    return not words or (len(words) <= 2 and _first_word(before) == "verb")


def _de_body(body: str) -> str:
    """"X tem" -> "que X tem": the relative clause after "Qual é o número de habitantes"."""
    return "que " + body


def _place_facts(sentence: str, subj: Subject) -> list[Fact]:
    facts = []
    for m in _PLACE.finditer(sentence):
        span = m.group("span")
        if _MONTH_OR_WEEKDAY.match(span) or subj.named_in(span) or len(span) < 3:
            continue
        body, named = _as_question_body(_clause_without(sentence, m.start(), m.end()), subj)
        if body.casefold().startswith("onde "):
            # "..., no Instituto Pasteur, onde estudou X": the relative pointed at the place
            # asked about ("Onde estudou X?", not "Onde onde estudou X?")
            body, named = _as_question_body(body[len("onde "):], subj)
        if not _good_body(body):
            continue
        qs = (_ask("Onde", body, named, subj), _ask("Em que lugar", body, named, subj),
              _tell("onde", body, named, subj))
        facts.append(Fact("place", span, qs, _sentence_case(f"{m.group('prep')} {span}.")))
    return facts


def _agent_facts(sentence: str, subj: Subject) -> list[Fact]:
    facts: list[Fact] = []
    if " por " not in sentence and " pelo " not in sentence and " pela " not in sentence:
        return facts  # no agent preposition: _AGENT cannot match (a scan of the sentence saved)
    for m in _AGENT.finditer(sentence):
        span = m.group("span")
        if subj.named_in(span):
            continue
        body, named = _as_question_body(_clause_without(sentence, m.start("prep"), m.end()), subj)
        if not _good_body(body):
            continue
        qs = (_ask("Por quem", body, named, subj), _ask("Por obra de quem", body, named, subj),
              _tell("por quem", body, named, subj))
        facts.append(Fact("agent", span, qs, f"Por {span}."))
    return facts


def _name_facts(sentence: str, subj: Subject) -> list[Fact]:
    """Names with no span a wh-question fits: asked about by name, naming the subject."""
    facts = []
    for m in _NAME_ANY.finditer(sentence):
        span = m.group("span").strip()
        if f"{span}." in _TITLES and sentence.startswith(". ", m.end()):
            rest = _NAME_AT.match(sentence, m.end() + 2)  # "o rei D. Dinis": one name
            if rest:
                # "D. Luís e D. Henrique": the first name, not "D. Luís e D"
                span = _HALF_NAME.sub("", f"{span}. {rest.group(0)}")
        prev = sentence[:m.start()].rsplit(None, 1)[-1:] or [""]  # the word before
        if prev[0][:1].isupper() and prev[0].casefold() not in _NOT_VERB_START:
            continue  # the tail of a name that starts the sentence ("Noel Rosa")
        if len(span) < 4 or subj.named_in(span) or _MONTH_OR_WEEKDAY.match(span) \
                or _ROMAN.fullmatch(span):
            continue
        qs = (f"O que o artigo sobre {subj.title} diz sobre {span}?",
              f"Qual é a relação entre {subj.np} e {span}?",
              f"Que informação sobre {subj.np} envolve {span}?")
        facts.append(Fact("name", span, qs, ""))
        if facts:  # one name per sentence: its phrasings carry the sentence already
            break
    return facts


def has_verb(text: str) -> bool:
    """Whether a word of ``text`` is one of the common verbs or ends like a verb (_VERB_END)."""
    low = text.casefold()
    return not _VERBS.isdisjoint(low.split()) or _VERB_END_IN.search(low) is not None


def _good_body(body: str) -> bool:
    """A clause worth asking about: a few words, no dangling connector, no open parenthesis."""
    words = body.split()
    if len(words) < 3 or len(body) > MAX_BODY_CHARS:
        return False
    if words[-1].casefold() in _NOT_UNITS or body.count("(") != body.count(")"):
        return False
    if words[0].casefold() in {"e", "ou", "mas", "que", "onde", "quando", "cujo", "cuja", "cujos",
                               "cujas", "qual", "quais"}:
        return False  # a clause cut from its head (a relative one asks "Quando quando ...?")
    if " — " in body or " – " in body:
        return False  # an item of a dashed list, not a clause
    if "," in body and _HANGING_PREP.search(body):
        return False  # a preposition left hanging where the span was
    if not has_verb(body):
        return False  # no verb left: a fragment, not a clause
    return not body.endswith((",", " e", " ou", " de", " em"))


def sentence_facts(sentence: str, subj: Subject, max_facts: int = 3) -> list[Fact]:
    """The facts one sentence can be asked about, best first (dates, quantities, places, agents,
    then bare names when nothing else fits), at most ``max_facts``."""
    sentence = _resolve_pronoun(sentence.strip(), subj)
    finders = [_place_facts, _agent_facts]
    # most sentences have no number (nor era): skip the costly patterns
    if _DIGIT.search(sentence) or ("éc" in sentence and _ERA.search(sentence)):
        finders = [_date_facts, _quantity_facts, *finders]
    seen: set[str] = set()
    out: list[Fact] = []
    for find in finders:
        for f in find(sentence, subj):
            if f.questions[0] not in seen:
                seen.add(f.questions[0])
                out.append(f)
        if len(out) >= max_facts:
            return out[:max_facts]
    return out or _name_facts(sentence, subj)[:max_facts]


def answer_sentence(sentence: str, subj: Subject) -> str:
    """The sentence as an answer: its leading pronoun replaced by the subject."""
    return _resolve_pronoun(sentence.strip(), subj)

"""The markup of real ptwiki pages: what the reader keeps, and no markup left (ingest/leaks.py).

Fixtures in tests/fixtures/markup/ have the shapes of the real dump: attribute-heavy tables
(with the ``rowspan"2"`` typo real pages carry), a long article full of refs, galleries, files,
quotes and formulas, and a prose-only stub.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.leaks import LEAK_PATTERNS, article_leaks, count_leaks, find_leaks, total
from ingest.wikitext import parse_wikitext

MARKUP = Path(__file__).parent / "fixtures" / "markup"
PAGES = Path(__file__).parent.parent / "data" / "sample" / "pages"


def _read(name: str) -> str:
    return (MARKUP / name).read_text(encoding="utf-8")


def _leaks_of(page) -> list[str]:
    """Every leak of a parsed page (text, headings, infobox values) as 'where: snippet'."""
    record = {"text": page.text, "infobox": page.infobox,
              "sections": [{"heading": s.heading} for s in page.sections]}
    return [f"{where}: {leak.kind}: {leak.snippet!r}" for where, leak in article_leaks(record)]


def _row(text: str, needle: str) -> str:
    rows = [line for line in text.split("\n") if needle in line]
    assert len(rows) == 1, (needle, rows)
    return rows[0]


# -- the leak counter ------------------------------------------------------------------------
@pytest.mark.parametrize(("markup", "kind"), [
    ("texto {{citar web}} x", "template braces"),
    ("a [[Lisboa]] b", "link brackets"),
    ("{| class", "table markup"),
    ("Lisboa | Porto", "pipe"),
    ('Distrito: style="border:1px" Viseu', "cell attribute"),
    ("Distrito: rowspan Viseu", "cell attribute"),
    ("Mapa thumb direita", "image option"),
    ("Mapa 250px direita", "image option"),
    ("Mapa miniaturadaimagem", "image option"),
    ("ver Categoria:Rios do Brasil", "namespace prefix"),
    ("Ficheiro:Mapa.png legenda", "namespace prefix"),
    ("A&nbsp;B", "HTML entity"),
    ("A&#160;B", "HTML entity"),
    ("texto <ref>fonte</ref>", "tag"),
    ("texto <br /> mais", "tag"),
    ("''itálico''", "bold/italic quotes"),
    ("== Seção ==", "heading"),
    ("__NOTOC__ texto", "magic word"),
])
def test_each_kind_of_markup_is_counted(markup, kind):
    counts = count_leaks(markup)
    assert counts[kind] >= 1, counts
    assert set(counts) == set(LEAK_PATTERNS)


def test_prose_is_not_counted():
    prose = ("A classe média da Beira Alta vivia da pastorícia; o estilo das casas, em granito, "
             "mudou pouco. Imagem: retrato de 1890; Categoria: primeira divisão. Como 2 < 3 e "
             "d'água, a miniatura do navio mede 30 cm, e a foto tem 640 px de largura. "
             "Rio — Ano: 1822; Margem: esquerda (AT&T, R&D). Fórmula = soma.")
    assert total(count_leaks(prose)) == 0, find_leaks(prose)


def test_find_leaks_gives_the_place_and_a_snippet():
    text = "Antes do texto. Depois vem rowspan=2 aqui e o fim."
    leaks = find_leaks(text, context=10)
    assert [leak.kind for leak in leaks] == ["cell attribute"]
    assert text[leaks[0].offset:].startswith("rowspan") and "rowspan" in leaks[0].snippet


# -- attribute-heavy tables ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tables_page():
    return parse_wikitext(_read("tabelas.wiki"), "Beira Alta")


def test_attribute_heavy_tables_leave_no_markup(tables_page):
    assert _leaks_of(tables_page) == []
    for attribute_text in ("border-bottom", "background", "font-size", "wikitable", "text-align"):
        assert attribute_text not in tables_page.text


def test_a_rowspan_value_fills_its_column_in_the_rows_below(tables_page):
    text = tables_page.text
    # rowspan"2" (the typo as real pages carry it) and rowspan="2": the district is what a
    # reader sees in the first column of the next row, and the population stays in its column.
    lamego = _row(text, "Lamego")
    assert lamego.startswith("Distrito: Viseu;")
    assert "Concelho: Lamego" in lamego and "População: 30 500" in lamego
    seia = _row(text, "Seia")
    assert seia.startswith("Distrito: Guarda;") and seia.endswith("População: 31 200")


def test_stacked_headers_and_colspans_keep_columns(tables_page):
    text = tables_page.text
    caramulo = _row(text, "Caramulo")
    values = dict(pair.split(": ", 1) for pair in caramulo.split("; "))
    assert values["Serra"] == "Caramulo"
    metros = next(k for k in values if "metros" in k)
    pes = next(k for k in values if "pés" in k)
    assert values[metros] == "1 076" and values[pes] == "3 530"
    # A cell across two columns gives its value once, under the name the columns share.
    montemuro = _row(text, "Montemuro")
    assert montemuro == "Serra: Montemuro; Altitude: desconhecida"
    # A note across the whole table is a plain line, not a value of the first column.
    assert "Fonte: recenseamento geral." in text.split("\n")
    assert "Distrito: Fonte" not in text
    # A footer of header cells with no data row under it is a line of its own, not new headers.
    assert "Total; 190 700" in text.split("\n")


def test_indented_table_captions_and_pipes_in_cells(tables_page):
    text = tables_page.text
    assert "Concelhos por distrito (1960)" in text
    julho = _row(text, "Julho")
    assert julho.startswith("Mês: Julho;") and "Mínima: 14 °C" in julho
    assert "Máxima: 9–10 °C" in _row(text, "Janeiro")


def test_the_page_keeps_prose_and_infobox_and_drops_boxes_around_it(tables_page):
    page = tables_page
    assert page.infobox["capital"] == "Viseu"
    assert page.infobox["população"] == "1 200 000 (1960)"
    assert not any(re.search(r"\d+px", v) for v in page.infobox.values())
    assert page.categories == ["Províncias de Portugal"]
    assert "extinta em 1976" in page.text and "influência continental" in page.text
    # hatnotes, the multiple-image box, the navbox and the Commons box are not text
    for dropped in ("clube de futebol", "Sé de Viseu", "Províncias portuguesas", "Beira Baixa",
                    "Mais notas", "Commons"):
        assert dropped not in page.text


# -- a long article full of refs, galleries, files, quotes, formulas -------------------------
LONG_TAIL = """
== Referências ==
{{Referências|col=2|grupo=nota}}
<references>
<ref name="extra">{{citar web|url=http://x.pt|título=Extra}}</ref>
</references>

== Ligações externas ==
* [http://www.exemplo.pt/tejo Página oficial] {{pt}}
{{Commonscat|Rio Tejo}}
{{Portal3|Portugal|Rios}}
{{DEFAULTSORT:Tejo}}
[[Categoria:Rios de Portugal]]
[[Categoria:Rios de Espanha|Tejo]]
"""


@pytest.fixture(scope="module")
def long_article():
    section = _read("artigo_longo.wiki")
    parts = ["__NOTOC__\nO '''Tejo''' é o rio mais longo da [[Península Ibérica]].\n== Percurso =="]
    n = 0
    while sum(map(len, parts)) < 60_000:
        n += 1
        parts.append(section.replace("troço N", f"troço {n}").replace("Troço N", f"Troço {n}"))
    raw = "\n".join(parts) + LONG_TAIL
    assert len(raw) >= 60_000
    return raw, n, parse_wikitext(raw, "Rio Tejo")


def test_a_long_article_leaves_no_markup(long_article):
    raw, n, page = long_article
    assert _leaks_of(page) == []
    assert raw.count("<ref") > 5 * n and raw.count("<gallery") == n


def test_a_long_article_keeps_what_the_reader_reads(long_article):
    _, n, page = long_article
    headings = [s.heading for s in page.sections]
    # "Percurso" holds only hatnotes and files before its first subsection: no text, no section
    assert headings == [""] + [f"Troço {i}" for i in range(1, n + 1)]
    text = page.text
    for i in (1, n):
        body = next(s.text for s in page.sections if s.heading == f"Troço {i}")
        assert body.startswith(f"No troço {i}, o rio corre entre margens de xisto e recebe")
        assert "O rio é a estrada líquida que une o interior ao mar." in body      # {{Citação}}
        assert f"As margens baixas do troço {i} inundam" in body                   # {{Quote|text=}}
        assert "chamam-lhe el río padre e os documentos antigos Tagus," in body     # {{lang}}, {{Lang-la}}
        assert "39°39′N 7°40′O" in body                                             # {{Coor dms}}
        assert "1950 e 1960" in body and "cerca de 30 %" in body                   # year links, &nbsp;
        assert "Mês: Agosto; Caudal (m³/s): 95; Fonte: CHT" in body               # flags dropped
    assert page.categories == ["Rios de Portugal", "Rios de Espanha"]
    # refs with what they cite and their language markers, the gallery with its captions,
    # files with their captions, the multiple-image box, the formulas: all gone, never halves
    for dropped in ("Ribeiro", "Diário de Notícias", "Aproveitamentos", "Hydro", "Margem esquerda",
                    "Portas de Ródão", "Ponte 25 de Abril", "Antes da barragem", "frac", "sum_",
                    "500 nos", "Média de 1990", "Página oficial", "confirmar"):
        assert dropped not in text, dropped
    assert "Referências" not in headings and "Ligações externas" not in headings


# -- prose-only stubs ------------------------------------------------------------------------
def test_a_prose_stub_is_its_two_paragraphs():
    page = parse_wikitext(_read("esboco.wiki"), "Vale Formoso")
    assert page.text == (
        "Vale Formoso é uma aldeia portuguesa do concelho da Covilhã, no distrito de Castelo "
        "Branco. Tinha 312 habitantes em 2011 e vive sobretudo da pastorícia e do queijo da serra."
        "\n\nA festa da padroeira realiza-se no segundo domingo de agosto.")
    assert page.categories == ["Aldeias do distrito de Castelo Branco"]
    assert not page.is_disambiguation and not page.infobox


# -- one feature at a time -------------------------------------------------------------------
FEATURES = [
    # (wikitext, text the reader keeps, text that must be gone)
    ("O nome {{Lang-en|Tagus River}} aparece.", "O nome Tagus River aparece.", ""),
    ("Em {{lang|fr|Paris}} e {{lang|en|London|italic=no}}.", "Em Paris e London.", ""),
    ('{{Citação|texto=Tudo vale a pena.|autor=Pessoa}}', "Tudo vale a pena.", "Pessoa"),
    ("A<ref name=fonte>{{citar periódico|título=T|periódico=P}} {{en}}</ref> e B<ref name=fonte />.",
     "A e B.", "T"),
    ("A<ref>\n{{citar web\n|url=http://a.pt\n|título=Longa\n}}\n</ref> B.", "A B.", "Longa"),
    ("C<ref>{{Link|en|2=http://a.org|3=Página}}</ref>.", "C.", "Página"),
    ("Em [[1950]], 3&ndash;4 e 5&#160;km&nbsp;a&amp;b.", "Em 1950, 3–4 e 5 km a&b.", ""),
    ("{{Outros usos|o clube}}\n{{Ver artigo principal|X}}\n{{Ver também|Y}}\n{{Mais notas}}\nTexto.",
     "Texto.", "clube"),
    ("Texto.{{clr}}\n{{-}}\n{{Commonscat|X}}\n__NOTOC__\n__SEM_TDC__", "Texto.", "X"),
    ("[[Ficheiro:A.jpg|thumb|upright=1.3|esquerda|Uma [[ponte]] em {{lang|en|London}}.]]Texto.",
     "Texto.", "ponte"),
    ("[[Imagem:B.png|miniaturadaimagem|200px|Legenda com [http://x.pt site].]]Texto.", "Texto.", "site"),
    ("<gallery>\nFicheiro:A.jpg|Vista [[Lisboa|da cidade]]\n</gallery>\nTexto.", "Texto.", "cidade"),
    ("Situa-se em {{Coord|-23.55|-46.63|display=inline}}.", "Situa-se em 23,55°S 46,63°O.", ""),
    ("{{Coord|40|N|8|W|display=title}}Texto.", "Texto.", ""),
    ("{{Flagicon|Brasil}} {{bandeira|BRA}} Brasil e {{flagcountry|Portugal}}.", "Brasil e Portugal.", ""),
    ("'''Negrito''' e ''itálico''<br />e <br>linha.", "Negrito e itálico\ne\nlinha.", ""),
    ("A fórmula <math>x^{2^{n}}|y|</math> some.", "A fórmula some.", "x^"),
    ('{| class="wikitable"\n! scope="col" style="width:5em" | Ano !! Fato\n|-\n'
     '| align=center | 1822 || [[Independência do Brasil|Independência]]<ref>x</ref><br />{{nowrap|7 de setembro}}\n|}',
     "Ano: 1822; Fato: Independência, 7 de setembro", "center"),
    ("{|\n! Nome !! Filhos\n|-\n| {{sort|Silva|José da Silva}} ||\n* Ana\n* {{ubl|Bia|[[Caio]]}}\n|}",
     "Nome: José da Silva; Filhos: Ana, Bia, Caio", "Silva|"),
    ("Na sede ({{Flagicon|ENG}} Inglaterra).", "Na sede (Inglaterra).", ""),
    ("Ver [[Portal:Brasil]] e [[Wikipédia:Livro de estilo|o livro]].", "Ver Brasil e o livro.", ""),
    ("Texto.<ref>nunca fechada\ncontinua\n\nParágrafo seguinte.", "Texto.\n\nParágrafo seguinte.",
     "continua"),
    ("Ângulo de <math>\\beta</math> e\n:<math>\\lambda = \\tan\\beta</math>.\nFim.", "Ângulo de e\nFim.", "lambda"),
]


@pytest.mark.parametrize(("wikitext", "kept", "gone"), FEATURES)
def test_feature(wikitext, kept, gone):
    page = parse_wikitext(wikitext, "Teste")
    assert page.text == kept
    if gone:
        assert gone not in page.text
    assert _leaks_of(page) == []


# -- every page of the shipped sample, as its page file stands now ---------------------------
def _article_pages() -> list[Path]:
    from ingest.namespaces import redirect_target, split_title

    pages = []
    for path in sorted(PAGES.glob("*.wiki")):
        head, _, text = path.read_text(encoding="utf-8").partition("\n---\n")
        title = next((line.split(":", 1)[1].strip() for line in head.splitlines()
                      if line.startswith("title:")), path.stem)
        if split_title(title)[0] == 0 and not redirect_target(text):
            pages.append(path)
    return pages


@pytest.mark.parametrize("path", _article_pages(), ids=lambda p: p.name)
def test_every_sample_page_file_cleans_without_leaks(path):
    """Page files are parsed directly, so pages added since the sample dump was last built
    are checked too (the ingested dump is checked in test_ingest_wikitext.py)."""
    head, _, text = path.read_text(encoding="utf-8").partition("\n---\n")
    page = parse_wikitext(text, path.stem)
    leaks = _leaks_of(page)
    assert not leaks, f"{path.name}: {len(leaks)} leak(s): " + "; ".join(leaks[:5])


def _table_cell_pages() -> list[Path]:
    pages = [*_article_pages(), *sorted(MARKUP.glob("*.wiki"))]
    return [p for p in pages if "{|" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("path", _table_cell_pages(), ids=lambda p: p.name)
def test_table_cells_agree_with_mwparserfromhell(path):
    """mwparserfromhell, the reference parser, splits every cell into attributes and contents:
    every word of a cell's contents is in the clean text, no attribute value is."""
    import mwparserfromhell
    from mwparserfromhell.nodes import Tag, Template

    raw = path.read_text(encoding="utf-8")
    if path.parent == PAGES:
        raw = raw.partition("\n---\n")[2]
    ours = parse_wikitext(raw, path.stem).text
    words = set(re.findall(r"\w+", ours))
    code = mwparserfromhell.parse(raw)
    checked = 0
    for cell in code.filter_tags(matches=lambda n: str(n.tag) in ("td", "th")):
        # cells inside a template (a navbox) or a ref are dropped with it
        if any(isinstance(a, Template) or isinstance(a, Tag) and str(a.tag) == "ref"
               for a in code.get_ancestors(cell)):
            continue
        contents = mwparserfromhell.parse(str(cell.contents))
        for ref in contents.filter_tags(matches=lambda n: str(n.tag) == "ref", recursive=False):
            contents.remove(ref)
        text = contents.strip_code()
        missing = [w for w in re.findall(r"\w+", text) if w not in words]
        assert not missing, (path.name, text.strip()[:80], missing)
        for attr in cell.attributes:
            value = str(attr.value).strip() if attr.value is not None else ""
            if len(value) > 3 and not value.isdigit():
                assert value not in ours, (path.name, str(attr))
        checked += 1
    assert checked

"""The cleaner: tricky wikitext -> the text a reader sees; no markup survives on the sample."""

import json

import pytest

from ingest.wikitext import parse_wikitext, split_params

CASES = [
    # (wikitext, expected clean text)
    ("'''Brasília''' é a [[capital federal|capital]] do [[Brasil]].",
     "Brasília é a capital do Brasil."),
    ("Os [[bandeirante]]s chegaram.", "Os bandeirantes chegaram."),
    ("Nasceu em [[Salvador (Bahia)|]].", "Nasceu em Salvador."),
    ("Texto<ref>Fonte, 2001.</ref> final<ref name=\"a\" /> aqui.", "Texto final aqui."),
    ("A<ref name=x>{{citar web|url=http://x|título=T}}</ref>B", "AB"),
    ("Antes <!-- comentário [[oculto]] --> depois", "Antes depois"),
    ("Em {{lang|de|Berlin}} havia.", "Em Berlin havia."),
    ("No {{séc|XVIII}}, a mina.", "No século XVIII, a mina."),
    ("Área de {{converter|8516000|km2}}.", "Área de 8 516 000 km²."),
    ("Tem {{formatnum:1234567}} habitantes.", "Tem 1 234 567 habitantes."),
    ("Nasceu em {{dni|12|11|1746}}.", "Nasceu em 12 de novembro de 1746."),
    ("Nasceu em {{data de nascimento|1839|6|21}}.", "Nasceu em 21 de junho de 1839."),
    ("Um {{nowrap|{{formatnum:5000}} km}} de rio.", "Um 5 000 km de rio."),
    ("Frase{{carece de fontes|data=2020}}.", "Frase."),
    ("[[Ficheiro:Mapa.png|miniaturadaimagem|direita|Mapa do [[Brasil]] em 1822.]]Texto.", "Texto."),
    ("[[Imagem:A.jpg|thumb|legenda]]Texto.", "Texto."),
    ("Texto.\n[[Categoria:Rios do Brasil|Amazonas]]\n[[en:Amazon River]]", "Texto."),
    ("Veja [[:Categoria:Rios|a categoria]].", "Veja a categoria."),
    ("Site [http://example.org oficial] e [http://example.org].", "Site oficial e."),
    ("''Itálico'' e '''''ambos'''''.", "Itálico e ambos."),
    ("Linha<br />seguinte", "Linha\nseguinte"),
    ("<small>pequeno</small> e <sup>2</sup>", "pequeno e 2"),
    ("A &amp; B&nbsp;C", "A & B C"),
    ("__NOTOC__\nTexto.", "Texto."),
    ("* um\n* dois\n# três", "um\ndois\ntrês"),
    ("Código <nowiki>[[não é link]]</nowiki>.", "Código [[não é link]]."),
    ("Fórmula <math>x^2</math> fim.", "Fórmula fim."),
    ("{{Info/Rio|nome=X|foz=[[Mar]]}}Texto do rio.", "Texto do rio."),
    ("Em Berlim {{lang|de|(Berlin)}}.", "Em Berlim (Berlin)."),
    ("Em {{sem-template-conhecido|x}} ().", "Em."),
]


@pytest.mark.parametrize(("wikitext", "expected"), CASES)
def test_tricky_snippets(wikitext, expected):
    assert parse_wikitext(wikitext, "Teste").text == expected


def test_sections_keep_headings_and_levels_and_drop_reference_sections():
    page = parse_wikitext(
        "Lead.\n== História ==\nTexto A.\n=== Colônia ===\nTexto B.\n"
        "== Referências ==\n{{Referências}}\n== Ligações externas ==\n* [http://x site]\n")
    assert [(s.heading, s.level, s.text) for s in page.sections] == [
        ("", 0, "Lead."), ("História", 2, "Texto A."), ("Colônia", 3, "Texto B.")]


def test_infobox_fields_are_structured_and_clean():
    page = parse_wikitext(
        "{{Info/Biografia\n| nome = Tiradentes\n| imagem = T.jpg\n| legenda = Retrato\n"
        "| nascimento_data = {{dni|12|11|1746}}\n| nascimento_local = [[Ritápolis]], [[Minas Gerais]]"
        "<ref>x</ref>\n| ocupação = [[dentista]]<br />[[alferes]]\n| altura = 1,70 m\n}}\nTexto.", "Tiradentes")
    assert page.infobox_type == "Biografia"
    assert page.infobox == {"nome": "Tiradentes", "nascimento_data": "12 de novembro de 1746",
                            "nascimento_local": "Ritápolis, Minas Gerais",
                            "ocupação": "dentista, alferes", "altura": "1,70 m"}


def test_tables_become_column_value_lines():
    page = parse_wikitext(
        '{| class="wikitable"\n|+ Afluentes\n! Rio !! Margem\n|-\n| [[Rio Negro|Negro]] || esquerda\n'
        '|-\n| style="color:red" | Madeira || direita<ref>x</ref>\n|}\nDepois.')
    assert page.sections[0].text == "Afluentes\nRio: Negro; Margem: esquerda\nRio: Madeira; Margem: direita\n\nDepois."
    nested = parse_wikitext("{|\n! Ano !! Fatos\n|-\n| 1822 ||\n{|\n| Grito || Ipiranga\n|}\n|}\nFim.")
    # The inner table's row is the outer cell's value; its ";" reads "," so the outer row
    # still parses as "Column: value" pairs.
    assert "Fatos: Grito, Ipiranga" in nested.text and "{|" not in nested.text and "Fim." in nested.text
    unclosed = parse_wikitext("Antes.\n{|\n| a || b\nDepois.")
    assert "{|" not in unclosed.text and "Antes." in unclosed.text
    dropped = parse_wikitext("{|\n| a || b\n|}\nDepois.", tables="drop")
    assert dropped.text == "Depois."


def test_categories_and_disambiguation():
    page = parse_wikitext("Texto.\n[[Categoria:Rios do Brasil]]\n[[Category:Rios|*]]")
    assert page.categories == ["Rios do Brasil", "Rios"]
    assert parse_wikitext("X pode ser:\n* [[A]]\n{{Desambiguação}}").is_disambiguation
    assert parse_wikitext("X pode ser:\n* [[A]]", "X (desambiguação)").is_disambiguation
    assert not parse_wikitext("Texto normal.").is_disambiguation


def test_unbalanced_markup_is_counted_and_removed():
    page = parse_wikitext("Texto {{quebrado sem fim.\nE [[link aberto também.")
    assert page.leftover_markup >= 2
    assert "{{" not in page.text and "[[" not in page.text
    assert page.text == "Texto\nE link aberto também."
    # An infobox never closed: its parameter lines go with it, the prose stays.
    page = parse_wikitext("{{Info/Rio\n| nome = Tejo\n| foz = [[Lisboa]]\nO Tejo nasce em Espanha.")
    assert page.text == "O Tejo nasce em Espanha." and page.leftover_markup >= 3


def test_split_params_respects_links():
    assert split_params("a|[[B|c]]|d=e") == ["a", "[[B|c]]", "d=e"]
    # nested links, a stray "]]" outside any link, a link left open
    assert split_params("x=[[A|[[B|b]]]]|y]]|z") == ["x=[[A|[[B|b]]]]", "y]]", "z"]
    assert split_params("[[[A|a]]]|b") == ["[[[A|a]]]", "b"]
    assert split_params("a|[[B|c") == ["a", "[[B|c"]


def test_headings_and_spacing_at_line_edges():
    page = parse_wikitext("Lead.\n== História ==\n  Texto  \n=== Sub ===\nMais , texto .\n"
                          "x == y ==\n= Nível um =\nFim")
    assert [(s.heading, s.level, s.text) for s in page.sections] == [
        ("", 0, "Lead."), ("História", 2, "Texto"), ("Sub", 3, "Mais, texto.\nx == y =="),
        ("Nível um", 1, "Fim")]


def test_no_markup_survives_on_the_whole_sample(sample_articles):
    """Every ingested article: its text, section headings and infobox values (ingest/leaks.py)."""
    from ingest.leaks import LEAK_PATTERNS, article_leaks, article_texts, count_leaks, total

    counts = dict.fromkeys(LEAK_PATTERNS, 0)
    examples = []
    for art in sample_articles:
        for _, text in article_texts(art):
            for kind, n in count_leaks(text).items():
                counts[kind] += n
        examples += [f"{art['title']} ({where}): {leak.kind}: {leak.snippet!r}"
                     for where, leak in article_leaks(art)]
    assert len(sample_articles) >= 40
    assert total(counts) == 0, f"{total(counts)} leak(s) {counts}:\n" + "\n".join(examples[:10])


def test_every_sample_reference_answer_is_in_its_cleaned_article(sample_articles, repo_root):
    from core.text import contains_answer

    by_title = {a["title"]: a for a in sample_articles}
    missing = []
    for line in (repo_root / "questions/amostra.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        if q.get("answerable") is False:
            continue
        art = by_title[q["source_title"]]
        hay = art["text"] + "\n" + "\n".join(art["infobox"].values())
        if not any(contains_answer(hay, ref) for ref in q["reference"]):
            missing.append(q["id"])
    assert not missing


def test_headings_and_link_texts_agree_with_mwparserfromhell(repo_root):
    """mwparserfromhell, the reference parser, reads the same headings and link texts."""
    import mwparserfromhell

    from ingest.namespaces import CATEGORY_NS, FILE_NS, LANGUAGE_PREFIXES, split_title
    from ingest.wikitext import SKIPPED_SECTIONS

    checked = 0
    for path in sorted((repo_root / "data/sample/pages").glob("[1-8]*.wiki")):
        raw = path.read_text(encoding="utf-8").split("\n---\n", 1)[1]
        ours = parse_wikitext(raw, path.stem)
        code = mwparserfromhell.parse(raw)
        theirs = []
        for section in code.get_sections(flat=True, include_lead=False):
            heading = section.filter_headings()[0]
            own_text = str(section)[len(str(heading)):]
            has_text = bool(mwparserfromhell.parse(own_text).strip_code().strip())
            title = heading.title.strip_code().strip()
            if has_text and title.casefold() not in SKIPPED_SECTIONS:
                theirs.append(title)
        assert [s.heading for s in ours.sections[1:]] == theirs, path.name
        body = ours.text
        for link in code.filter_wikilinks(recursive=False):
            target = str(link.title).strip()
            ns, _ = split_title(target)
            prefix = target.split(":", 1)[0].lower() if ":" in target else ""
            if ns in (FILE_NS, CATEGORY_NS) or prefix in LANGUAGE_PREFIXES or link.text and "{{" in str(link.text):
                continue
            shown = (link.text.strip_code() if link.text else target).strip()
            if shown and not _inside_dropped(code, link):
                assert shown in body, (path.name, shown)
                checked += 1
    assert checked > 500


def _inside_dropped(code, node) -> bool:
    """Links in the reference/external-link sections are meant to disappear (links inside
    refs, tags and templates are not top-level nodes, so they are not checked at all)."""
    from ingest.wikitext import SKIPPED_SECTIONS

    for section in code.get_sections(levels=[2]):
        heading = section.filter_headings()[0].title.strip_code().strip()
        if heading.casefold() in SKIPPED_SECTIONS and node in section.filter_wikilinks(recursive=False):
            return True
    return False

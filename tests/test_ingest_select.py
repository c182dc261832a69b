"""`ingest.select`: a part of the dump, chosen by categories, titles, questions or at random."""

import json
import logging

import mwparserfromhell
import pytest

from core.configbase import ConfigError
from core.io import read_jsonl
from ingest import pipeline
from ingest.config import IngestConfig, SelectConfig
from ingest.dump import DumpReader
from ingest.namespaces import normalize_title
from ingest.pipeline import run_ingest
from ingest.select import category_name, choose, sample_key


def _ingest(dump, out, workers=0, **select):
    report = run_ingest(dump, out, IngestConfig(workers=workers, select=SelectConfig(**select)))
    return report, [a["title"] for a in read_jsonl(out / "articles.jsonl")]


def _outputs(folder):
    return {name: (folder / name).read_bytes() for name in pipeline.OUTPUTS
            if name != "ingest_report.json"}


@pytest.fixture(scope="module")
def sample_titles(sample_ingest):
    return [a["title"] for a in read_jsonl(sample_ingest / "articles.jsonl")]


# -- config -------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    ({"neighbours": 2}, "neighbours needs a questions file"),
    ({"categories": ["Rios"], "category_depth": -1}, "category_depth must be >= 0"),
    ({"category_depth": 1}, "categories is empty"),
    ({"sample": 0}, "sample must be >= 1"),
    ({"categories": ["Categoria:"]}, "not a category name"),
    ({"sampel": 3}, "unknown setting"),
])
def test_bad_settings_are_refused_naming_the_field(settings, message):
    with pytest.raises(ConfigError, match=message) as info:
        IngestConfig.from_dict({"select": settings})
    assert "select" in str(info.value)


def test_every_setting_has_a_help_text_and_nothing_is_selected_by_default():
    described = [row for row in IngestConfig.describe() if row[0].startswith("select.")]
    assert {row[0] for row in described} == {
        "select.categories", "select.category_depth", "select.titles", "select.questions",
        "select.neighbours", "select.sample", "select.seed"}
    assert all(len(row[1]) > 20 for row in described)
    assert not IngestConfig().select.active


def test_files_are_relative_to_the_config_folder(tmp_path):
    cfg = SelectConfig(titles="titulos.txt", questions="/abs/q.jsonl").resolved(tmp_path)
    assert cfg.titles == str(tmp_path / "titulos.txt") and cfg.questions == "/abs/q.jsonl"


def test_category_names_are_read_as_the_wiki_reads_them():
    assert category_name("Categoria:revoltas_no  Brasil Colônia") == "Revoltas no Brasil Colônia"
    assert category_name("category:Rios") == category_name("Rios") == "Rios"
    assert category_name("Anexo:Rios") == "Anexo:Rios"  # another namespace: not a prefix


# -- no rule / every article --------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_a_selection_of_every_article_writes_what_no_selection_writes(
        tmp_path, sample_dump, sample_ingest, sample_titles, workers):
    """The selected path (articles chosen after the read, their instructions derived then) gives
    the very bytes of an ingest without selection when it selects everything."""
    report, titles = _ingest(sample_dump, tmp_path, workers=workers, sample=1000)
    assert _outputs(tmp_path) == _outputs(sample_ingest)
    sel = report["selection"]
    assert sel["rules"] == {"sample": 51} and sel["total"] == 51 == report["articles"]
    assert sel["articles_in_dump"] == 51 and sel["redirects_kept"] == 16 == report["redirects"]
    assert not sel["warnings"]


def test_no_rule_reports_no_selection(sample_ingest):
    report = json.loads((sample_ingest / "ingest_report.json").read_text(encoding="utf-8"))
    assert "selection" not in report and report["articles"] == 51


# -- categories ---------------------------------------------------------------------------------

def test_categories_at_depth_0_select_the_articles_directly_in_them(tmp_path, sample_dump,
                                                                    sample_articles):
    report, titles = _ingest(sample_dump, tmp_path, categories=[
        "Categoria:revoltas_no Brasil Colônia", "Category:Poetas de Portugal"])
    expected = [a["title"] for a in sample_articles
                if {"Revoltas no Brasil Colônia", "Poetas de Portugal"} & set(a["categories"])]
    assert titles == expected == ["Inconfidência Mineira", "Luís de Camões", "Fernando Pessoa"]
    assert report["selection"]["rules"] == {"categories": 3}


def test_depth_1_goes_through_the_subcategories_of_the_dumps_category_pages(tmp_path, sample_dump):
    """The sample's page "Categoria:Inconfidência Mineira" (in "Revoltas no Brasil Colônia")
    comes after the articles in it: Tiradentes is in that subcategory only."""
    _, depth0 = _ingest(sample_dump, tmp_path / "0", categories=["Revoltas no Brasil Colônia"])
    report, depth1 = _ingest(sample_dump, tmp_path / "1", categories=["Revoltas no Brasil Colônia"],
                             category_depth=1)
    assert depth0 == ["Inconfidência Mineira"]
    assert depth1 == ["Tiradentes", "Inconfidência Mineira"]
    # category pages are read only for the tree; they never become articles
    assert report["skipped"]["namespace"] == 9


_SITE = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="pt">
  <siteinfo><sitename>Wikipédia</sitename><dbname>ptwiki</dbname>
    <namespaces><namespace key="0" case="first-letter" />
      <namespace key="14" case="first-letter">Categoria</namespace></namespaces>
  </siteinfo>
"""
_PROSE = ("O artigo descreve um lugar imaginado para os testes, com frases bastante longas para "
          "que não seja tomado por um esboço, e mais uma frase sobre a sua história antiga. ") * 2


def _page(i, title, text, ns=0):
    return (f'  <page><title>{title}</title><ns>{ns}</ns><id>{i}</id><revision><id>{i}0</id>'
            f'<timestamp>2024-01-01T00:00:00Z</timestamp><text xml:space="preserve">{text}'
            f'</text></revision></page>\n')


@pytest.fixture
def tree_dump(tmp_path):
    """Rios > Rios de Portugal > Afluentes do Tejo > Rios de Portugal (a cycle); the category
    pages after the articles."""
    pages = [
        _page(1, "Rio Tejo", _PROSE + "[[Categoria:Rios de Portugal]]"),
        _page(2, "Rio Zêzere", _PROSE + "[[Categoria:afluentes_do Tejo]]"),
        _page(3, "Rio Nilo", _PROSE + "[[Categoria:Rios]]"),
        _page(4, "Lisboa", _PROSE + "[[:Categoria:Rios]] [[Categoria:Cidades]]"),
        _page(10, "Categoria:Rios de Portugal", "[[Categoria:Rios]] [[Categoria:Afluentes do Tejo]]", 14),
        _page(11, "Categoria:Afluentes do Tejo", "Texto. [[Categoria:Rios de Portugal]]", 14),
        _page(12, "Categoria:Cidades", "Ver [[:Categoria:Rios]] e [[Portal:Rios]].", 14),
    ]
    path = tmp_path / "arvore.xml"
    path.write_text(_SITE + "".join(pages) + "</mediawiki>\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("depth, expected", [
    (0, ["Rio Nilo"]),
    (1, ["Rio Tejo", "Rio Nilo"]),
    (2, ["Rio Tejo", "Rio Zêzere", "Rio Nilo"]),
    (5, ["Rio Tejo", "Rio Zêzere", "Rio Nilo"]),
])
def test_each_level_of_depth_adds_one_level_of_subcategories(tmp_path, tree_dump, depth, expected):
    report, titles = _ingest(tree_dump, tmp_path / "out", categories=["Rios"],
                             category_depth=depth)
    # a visible link [[:Categoria:Rios]] or a link to another namespace is no membership
    assert titles == expected
    assert report["selection"]["rules"]["categories"] == len(expected)


# -- titles -------------------------------------------------------------------------------------

def test_a_title_file_selects_its_titles_and_a_redirects_target(tmp_path, sample_dump):
    listed = tmp_path / "titulos.txt"
    listed.write_text("# artigos da análise\n\ntiradentes\nCPLP\n  \nArtigo_que não existe\n"
                      "Pedro Nunes\n", encoding="utf-8")
    report, titles = _ingest(sample_dump, tmp_path / "out", titles=str(listed))
    assert titles == ["Tiradentes", "Comunidade dos Países de Língua Portuguesa", "Pedro Nunes"]
    sel = report["selection"]
    assert sel["rules"] == {"titles": 3}
    assert sel["not_found"] == {"titles": {"count": 1, "first": ["Artigo que não existe"]}}
    assert any("not in the dump" in w and "Artigo que não existe" in w for w in sel["warnings"])


def test_a_missing_or_empty_file_is_refused_before_the_dump_is_read(tmp_path, sample_dump):
    from core.io import InputError

    with pytest.raises(InputError, match="ingest.select.titles: file not found"):
        _ingest(sample_dump, tmp_path / "out", titles=str(tmp_path / "nada.txt"))
    assert not (tmp_path / "out").exists()  # refused before the dump was read
    with pytest.raises(InputError, match="ingest.select.questions: .*vazio.jsonl"):
        (tmp_path / "vazio.jsonl").write_text("", encoding="utf-8")
        _ingest(sample_dump, tmp_path / "out", questions=str(tmp_path / "vazio.jsonl"))
    assert not (tmp_path / "out").exists()


def test_redirects_to_selected_articles_are_kept_as_aliases_and_others_dropped(
        tmp_path, sample_dump):
    listed = tmp_path / "titulos.txt"
    listed.write_text("Tiradentes\nJogos Olímpicos de Verão de 2016\nMachado de Assis\n",
                      encoding="utf-8")
    report, _ = _ingest(sample_dump, tmp_path / "out", titles=str(listed))
    redirects = read_jsonl(tmp_path / "out" / "redirects.jsonl")
    assert [r["title"] for r in redirects] == [
        "Joaquim José da Silva Xavier", "Rio 2016", "Jogos da XXXI Olimpíada"]
    articles = {a["title"]: a for a in read_jsonl(tmp_path / "out" / "articles.jsonl")}
    assert articles["Tiradentes"]["aliases"] == ["Joaquim José da Silva Xavier"]
    assert articles["Jogos Olímpicos de Verão de 2016"]["aliases"] == [
        "Jogos da XXXI Olimpíada", "Rio 2016"]
    assert all("_links" not in a for a in articles.values())
    assert report["redirects"] == 3 and report["selection"]["redirects_in_dump"] == 16
    assert report["instructions"]["alias_targets"] == 2
    # the instruction set holds the selected articles only, alias questions included
    records = (read_jsonl(tmp_path / "out" / "instructions.train.jsonl")
               + read_jsonl(tmp_path / "out" / "instructions.val.jsonl"))
    assert {r["source_title"] for r in records} == set(articles)
    assert any("Joaquim José da Silva Xavier" in r["instruction"] + r["output"] for r in records)


# -- questions ----------------------------------------------------------------------------------

def _links_in_order(dump, title, articles, redirects):
    """What mwparserfromhell reads as the page's links, resolved to the sample's articles."""
    page = next(p for p in DumpReader(dump) if p.title == title)
    found = []
    for link in mwparserfromhell.parse(page.text).filter_wikilinks():
        target = normalize_title(str(link.title).split("#", 1)[0])
        target = redirects.get(target, target)
        if target in articles and target != title and target not in found:
            found.append(target)
    return found


def test_a_question_file_selects_its_source_articles_and_their_link_neighbours(
        tmp_path, sample_dump, sample_ingest, sample_titles):
    questions = tmp_path / "perguntas.jsonl"
    questions.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in [
        {"question": "Quem foi Tiradentes?", "source_title": "Tiradentes"},
        {"question": "O que é a CPLP?", "source_title": "CPLP"},
        {"question": "Onde?", "source_titles": ["Lisboa", "Página Inexistente"]},
        {"question": "Sem fonte?"},
    ]) + "\n", encoding="utf-8")
    report, base = _ingest(sample_dump, tmp_path / "0", questions=str(questions))
    assert base == ["Tiradentes", "Lisboa", "Comunidade dos Países de Língua Portuguesa"]
    assert report["selection"]["not_found"]["questions"]["first"] == ["Página Inexistente"]

    redirects = {r["title"]: r["target"] for r in read_jsonl(sample_ingest / "redirects.jsonl")}
    expected = set(base)
    for source in base:
        links = _links_in_order(sample_dump, source, set(sample_titles), redirects)
        assert len(links) >= 2, source
        expected |= set(links[:2])
    report, titles = _ingest(sample_dump, tmp_path / "2", questions=str(questions), neighbours=2)
    assert set(titles) == expected and len(expected) > len(base) + 2
    assert titles == [t for t in sample_titles if t in expected]  # dump order
    published = read_jsonl(tmp_path / "2" / "articles.jsonl")
    assert all(set(a) == set(published[0]) and "_links" not in a for a in published)
    sel = report["selection"]
    assert sel["rules"] == {"questions": len(expected)}
    assert sel["question_neighbours"] == len(expected - set(base))


def test_the_csv_and_yaml_question_files_select_alike(tmp_path, sample_dump):
    (tmp_path / "q.csv").write_text("question,source_title\nQuem?,Tiradentes\nE?,Alpaca\n",
                                    encoding="utf-8")
    (tmp_path / "q.yaml").write_text("- question: Quem?\n  source_title: Tiradentes\n"
                                     "- question: E?\n  source_title: alpaca\n", encoding="utf-8")
    _, from_csv = _ingest(sample_dump, tmp_path / "c", questions=str(tmp_path / "q.csv"))
    _, from_yaml = _ingest(sample_dump, tmp_path / "y", questions=str(tmp_path / "q.yaml"))
    assert from_csv == from_yaml == ["Tiradentes", "Alpaca"]


# -- random sample ------------------------------------------------------------------------------

def test_a_sample_is_the_same_whatever_the_run_and_the_dump_order(
        tmp_path, sample_dump, sample_ingest, sample_titles):
    _, first = _ingest(sample_dump, tmp_path / "a", sample=7, seed=3)
    _, again = _ingest(sample_dump, tmp_path / "b", workers=2, sample=7, seed=3)
    _, other = _ingest(sample_dump, tmp_path / "c", sample=7, seed=4)
    assert len(first) == 7 and first == again
    assert set(other) != set(first)
    assert set(first) == set(sorted(sample_titles, key=lambda t: sample_key(3, t))[:7])
    assert first == [t for t in sample_titles if t in first]  # in dump order
    # the same choice over the articles in reverse order
    lines = (sample_ingest / "articles.jsonl").read_bytes().splitlines(keepends=True)
    reversed_file = tmp_path / "reversed.jsonl"
    reversed_file.write_bytes(b"".join(reversed(lines)))
    chosen = choose(reversed_file, {}, [], SelectConfig(sample=7, seed=3))
    assert chosen.titles == set(first)


# -- the union, warnings, the summary -----------------------------------------------------------

def test_several_rules_select_their_union(tmp_path, sample_dump):
    listed = tmp_path / "titulos.txt"
    listed.write_text("Tiradentes\nAlpaca\n", encoding="utf-8")
    _, by_category = _ingest(sample_dump, tmp_path / "c", categories=["Poetas de Portugal"])
    _, by_sample = _ingest(sample_dump, tmp_path / "s", sample=5, seed=1)
    report, both = _ingest(sample_dump, tmp_path / "u", categories=["Poetas de Portugal"],
                           titles=str(listed), sample=5, seed=1)
    union = set(by_category) | {"Tiradentes", "Alpaca"} | set(by_sample)
    assert set(both) == union
    sel = report["selection"]
    assert sel["rules"] == {"categories": 2, "titles": 2, "sample": 5}
    assert sel["total"] == len(union) == report["articles"]


def test_a_rule_that_selects_nothing_is_warned_about_by_name(tmp_path, sample_dump, caplog):
    listed = tmp_path / "titulos.txt"
    listed.write_text("Tiradentes\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="ingest.select"):
        report, titles = _ingest(sample_dump, tmp_path / "out", categories=["Rios da Lua"],
                                 titles=str(listed))
    assert titles == ["Tiradentes"]
    sel = report["selection"]
    assert sel["rules"] == {"categories": 0, "titles": 1}
    assert sel["warnings"] == ["ingest.select.categories selected no article: categories "
                               "['Rios da Lua'] (depth 0)"]
    assert "ingest.select.categories selected no article" in caplog.text


def test_the_summary_says_what_each_rule_selected(tmp_path, sample_dump, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the table's width, not the terminal's running this
    report, _ = _ingest(sample_dump, tmp_path, categories=["Poetas de Portugal"], sample=3)
    pipeline.print_report(report, tmp_path)
    out = " ".join(capsys.readouterr().out.split())
    assert "categories 2, sample 3 -> " in out and "of 51 articles" in out


def test_the_command_reads_the_files_relative_to_the_config(tmp_path, sample_dump, monkeypatch):
    from typer.testing import CliRunner

    from compara.cli import app

    folder = tmp_path / "experimento"
    folder.mkdir()
    (folder / "titulos.txt").write_text("Alpaca\n", encoding="utf-8")
    (folder / "exp.yaml").write_text(
        f"paths:\n  dump: {sample_dump}\n  data: saida\n"
        "ingest:\n  workers: 0\n  select:\n    titles: titulos.txt\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    res = CliRunner().invoke(app, ["ingest", "-c", str(folder / "exp.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert report["selection"]["rules"] == {"titles": 1}
    assert [a["title"] for a in read_jsonl(folder / "saida" / "articles.jsonl")] == ["Alpaca"]


@pytest.mark.parametrize("kill_at", [30, 70])
def test_a_killed_selection_resumes_to_the_same_outputs(tmp_path, sample_dump, monkeypatch,
                                                        kill_at):
    """The category pages and the link lists live in the partial files like the articles."""
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "Quem?", "source_title": "Brasília"}\n', encoding="utf-8")
    cfg = IngestConfig(workers=0, batch_pages=4, select=SelectConfig(
        categories=["Revoltas no Brasil Colônia"], category_depth=1, questions=str(questions),
        neighbours=3))
    run_ingest(sample_dump, tmp_path / "whole", cfg)
    monkeypatch.setattr(pipeline, "_STATE_EVERY_S", 0.0)
    real, seen = pipeline.process_page, {"n": 0}

    def dying(page, cfg):
        seen["n"] += 1
        if seen["n"] == kill_at:
            raise KeyboardInterrupt
        return real(page, cfg)

    monkeypatch.setattr(pipeline, "process_page", dying)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(sample_dump, tmp_path / "out", cfg)
    monkeypatch.setattr(pipeline, "process_page", real)
    report = run_ingest(sample_dump, tmp_path / "out", cfg.replace(workers=2), resume=True)
    assert _outputs(tmp_path / "out") == _outputs(tmp_path / "whole")
    assert report["selection"]["rules"] == {"categories": 2, "questions": 4}

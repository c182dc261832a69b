"""Reading dumps: formats, namespaces, redirects, and damaged input."""

import bz2
import importlib.util
import sys

import pytest

from ingest.dump import DumpReader
from ingest.namespaces import redirect_target, split_title


def _load_build(repo_root):
    spec = importlib.util.spec_from_file_location("sample_build", repo_root / "data/sample/build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sample_build"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build(repo_root):
    return _load_build(repo_root)


def _read(path):
    problems = []
    pages = list(DumpReader(path, problems.append))
    return pages, problems


def test_committed_sample_is_built_from_the_page_files(build):
    assert build.main(["--check"]) == 0


def test_xml_bz2_and_multistream_give_the_same_pages(tmp_path, build, sample_dump):
    assert build.main(["--out-dir", str(tmp_path), "--bz2", "--multistream"]) == 0
    plain, problems = _read(sample_dump)
    assert not problems
    for name in ("ptwiki-amostra-pages-articles.xml.bz2",
                 "ptwiki-amostra-pages-articles-multistream.xml.bz2"):
        pages, problems = _read(tmp_path / name)
        assert not problems
        assert [(p.id, p.title, p.text) for p in pages] == [(p.id, p.title, p.text) for p in plain]
    assert (tmp_path / "ptwiki-amostra-pages-articles-multistream-index.txt.bz2").exists()


def test_namespaces_redirects_and_metadata(sample_dump):
    pages, _ = _read(sample_dump)
    by_title = {p.title: p for p in pages}
    assert by_title["Tiradentes"].namespace == 0
    assert by_title["Predefinição:Info/Biografia"].namespace == 10
    assert by_title["Usuário(a):Amostra"].namespace == 2
    assert by_title["Anexo:Lista de capitais do Brasil"].namespace == 102
    assert by_title["Joaquim José da Silva Xavier"].redirect == "Tiradentes"
    assert by_title["Lei 11.340"].redirect == "Lei Maria da Penha"  # #REDIRECT (English keyword)
    tira = by_title["Tiradentes"]
    assert tira.revision_id and tira.timestamp.endswith("Z") and len(tira.text) > 3000


def test_redirect_keywords_and_prefixes():
    assert redirect_target("#REDIRECIONAMENTO [[Brasília]]") == "Brasília"
    assert redirect_target("#redirect[[rio_Amazonas#Foz|x]]") == "Rio Amazonas"
    assert redirect_target("Texto normal [[Brasília]]") is None
    assert split_title("Imagem:Foto.jpg") == (6, "Foto.jpg")
    assert split_title("Utilizador:Fulano") == (2, "Fulano")
    assert split_title("Rio: um filme") == (0, "Rio: um filme")


def test_malformed_xml_names_the_page_and_reading_resumes_after_it(tmp_path, sample_dump):
    xml = sample_dump.read_bytes()
    i = xml.index(b"<title>Santos Dumont</title>")
    bad = tmp_path / "bad.xml"
    bad.write_bytes(xml[:i + 300] + b"<quebrado attr=>" + xml[i + 300:])
    pages, problems = _read(bad)
    good, _ = _read(sample_dump)
    assert [p.title for p in pages] == [p.title for p in good if p.title != "Santos Dumont"]
    (problem,) = problems
    assert problem.kind == "xml" and not problem.fatal
    assert problem.page_title == "Santos Dumont" and problem.page_id == 1003
    assert problem.line and problem.byte_offset
    assert "Santos Dumont" in problem.describe(bad) and "line" in problem.describe(bad)


def test_invalid_utf8_is_replaced_and_the_page_named(tmp_path, sample_dump):
    xml = sample_dump.read_bytes()
    i = xml.index(b"<title>Machado de Assis</title>")
    j = xml.index(b'xml:space="preserve">', i) + 60
    bad = tmp_path / "bad.xml"
    bad.write_bytes(xml[:j] + b"\xff caf\xe9 " + xml[j:])
    pages, problems = _read(bad)
    assert len(pages) == len(_read(sample_dump)[0])
    (problem,) = problems
    assert problem.kind == "encoding" and problem.page_title == "Machado de Assis"
    assert "\ufffd" in next(p.text for p in pages if p.title == "Machado de Assis")


def test_truncated_multistream_keeps_the_complete_streams(tmp_path, build):
    full = tmp_path / "m.xml.bz2"
    build.write_multistream(build.load_pages(), full, per_stream=10)
    cut = tmp_path / "cut.xml.bz2"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    pages, problems = _read(cut)
    assert 20 <= len(pages) < 79
    assert problems[-1].kind == "truncated" and problems[-1].fatal


def test_truncated_plain_xml_reports_the_last_page(tmp_path, sample_dump):
    xml = sample_dump.read_bytes()
    cut = tmp_path / "cut.xml"
    cut.write_bytes(xml[: len(xml) // 2])
    pages, problems = _read(cut)
    assert pages and problems[-1].fatal and problems[-1].page_title


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.xml"):
        list(DumpReader(tmp_path / "nope.xml"))


def test_single_stream_bz2_cut_mid_block(tmp_path, sample_dump):
    cut = tmp_path / "cut.xml.bz2"
    data = bz2.compress(sample_dump.read_bytes())
    cut.write_bytes(data[: len(data) // 2])
    pages, problems = _read(cut)
    # One bz2 block holds the whole sample: nothing before the damage can be decoded,
    # and the problem says so instead of failing with a traceback.
    assert problems and problems[-1].kind == "truncated"


_SITE = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="pt">
  <siteinfo><sitename>Wikipédia</sitename><dbname>ptwiki</dbname>
    <namespaces><namespace key="0" case="first-letter" />
      <namespace key="10" case="first-letter">Predefinição</namespace></namespaces>
  </siteinfo>
"""


def test_pages_keep_what_ingest_uses_from_every_kind_of_revision_element(tmp_path):
    """Fields ingest never uses (contributors, comments, hashes, minor flags) are skipped; a
    page with several revisions keeps the last; a page without <ns> gets its namespace from
    the title's prefix; underscores in titles read as spaces."""
    xml = _SITE + """  <page><title>Rio_Verde</title><ns>0</ns><id>7</id>
    <restrictions>edit=sysop</restrictions>
    <revision><id>70</id><parentid>69</parentid><timestamp>2020-01-01T00:00:00Z</timestamp>
      <contributor><username>Ana</username><id>5</id></contributor><minor />
      <comment>primeira</comment><origin>70</origin><model>wikitext</model>
      <format>text/x-wiki</format><text bytes="9" sha1="x" xml:space="preserve">antigo</text>
      <sha1>abc</sha1></revision>
    <revision><id>71</id><timestamp>2021-02-03T04:05:06Z</timestamp>
      <contributor deleted="deleted" /><comment deleted="deleted" />
      <text bytes="4" xml:space="preserve">novo texto</text></revision>
  </page>
  <page><title>Predefinição:Info</title><id>8</id>
    <revision><id>80</id><timestamp>2021-01-01T00:00:00Z</timestamp><text>{{x}}</text></revision>
  </page>
  <page><title>Vazia</title><ns>0</ns><id>9</id><redirect title="Rio Verde" />
    <revision><id>90</id><timestamp>2021-01-01T00:00:00Z</timestamp><text deleted="deleted" /></revision>
  </page>
</mediawiki>
"""
    path = tmp_path / "d.xml"
    path.write_text(xml, encoding="utf-8")
    reader = DumpReader(path)
    problems = []
    reader.on_problem = problems.append
    pages = list(reader)
    assert not problems and reader.db_name == "ptwiki" and reader.namespaces[10] == "Predefinição"
    rio, info, empty = pages
    assert (rio.id, rio.title, rio.namespace) == (7, "Rio Verde", 0)
    assert (rio.revision_id, rio.timestamp, rio.text) == (71, "2021-02-03T04:05:06Z", "novo texto")
    assert (info.namespace, info.title) == (10, "Predefinição:Info")  # full title, as with <ns>
    assert empty.redirect == "Rio Verde" and empty.text is None


def test_an_unknown_element_between_pages_is_reported_and_the_pages_before_it_kept(tmp_path):
    xml = _SITE + """  <page><title>A</title><ns>0</ns><id>1</id>
    <revision><id>10</id><timestamp>2021-01-01T00:00:00Z</timestamp><text>a</text></revision></page>
  <estranho>?</estranho>
</mediawiki>
"""
    path = tmp_path / "d.xml"
    path.write_text(xml, encoding="utf-8")
    pages, problems = _read(path)
    assert [p.title for p in pages] == ["A"]
    assert problems and problems[0].kind == "xml" and "estranho" in problems[0].message

import json

import pytest

from core.io import read_jsonl
from rag.chunking import ReadReport, article_chunks, infobox_lines, iter_article_chunks
from rag.config import IndexConfig


@pytest.fixture
def articles(fixtures_dir):
    return read_jsonl(fixtures_dir / "articles.jsonl")


def _long_article():
    para = ("O município tem clima tropical e economia baseada na agricultura familiar, "
            "com produção de café, milho e feijão. ")
    return {"id": 99, "title": "Município Longo", "url": "https://pt.wikipedia.org/wiki/ML",
            "revision_id": 7, "sections": [
                {"heading": "", "level": 0, "text": "Município Longo é um município fictício."},
                {"heading": "Economia", "level": 2, "text": para * 40},
                {"heading": "Agricultura", "level": 3, "text": "Planta-se café. " * 80},
                {"heading": "Cultura", "level": 2, "text": "Festa anual de São João."}],
            "infobox": {"estado": "Minas Gerais", "população_total": "12 345"}}


def test_chunks_never_cross_sections_and_respect_size():
    cfg = IndexConfig(chunk_size=300, chunk_overlap=50)
    art = _long_article()
    chunks = article_chunks(art, cfg)
    assert any("estado: Minas Gerais" in c.body for c in chunks if c.section == "")
    texts = {"": art["sections"][0]["text"], "Economia": art["sections"][1]["text"],
             "Economia › Agricultura": art["sections"][2]["text"],
             "Cultura": art["sections"][3]["text"]}
    assert {c.section for c in chunks} == set(texts)
    for c in chunks:
        assert len(c.body) <= cfg.chunk_size
        if c.section:
            assert c.body in texts[c.section], "a chunk holds text from outside its section"
    # the long sections are split, and consecutive pieces of one section overlap
    economia = [c for c in chunks if c.section == "Economia"]
    assert len(economia) > 5
    assert economia[0].body[-20:] in economia[1].body


def test_every_chunk_stands_alone_with_complete_metadata(articles):
    cfg = IndexConfig()
    for art in articles:
        chunks = article_chunks(art, cfg)
        assert chunks
        assert [c.chunk_no for c in chunks] == list(range(len(chunks)))
        assert len({c.id for c in chunks}) == len(chunks)
        for c in chunks:
            meta = c.metadata()
            for key in ("title", "url", "page_id", "revision_id", "chunk_no", "chunk_id"):
                assert meta[key] not in (None, ""), key
            assert meta["title"] == art["title"] and meta["page_id"] == art["id"]
            # the header names the article and the section, then comes the section text
            header = c.text[: c.body_offset]
            assert header.startswith(art["title"])
            if c.section:
                assert c.section in header
            assert c.text[c.body_offset:] == c.body


def test_tables_and_infobox_facts_are_indexed_as_text(articles):
    rio = next(a for a in articles if a["title"] == "Rio Verde-Claro")
    chunks = article_chunks(rio, IndexConfig(infobox="chunk"))
    infobox = [c for c in chunks if c.section == "Infobox"]
    assert len(infobox) == 1 and "nascente: Serra do Lajeado" in infobox[0].body
    assert any("Margem: direita" in c.body for c in chunks)  # a table row


@pytest.mark.parametrize("mode", ["lead", "none"])
def test_infobox_modes(articles, mode):
    rio = next(a for a in articles if a["title"] == "Rio Verde-Claro")
    chunks = article_chunks(rio, IndexConfig(infobox=mode))
    assert not any(c.section == "Infobox" for c in chunks)
    lead = [c for c in chunks if c.section == ""]
    in_lead = any("nascente: Serra do Lajeado" in c.body for c in lead)
    assert in_lead == (mode == "lead")


def test_infobox_lines_readable():
    assert infobox_lines({"nascimento_data": " 3 de maio ", "vazio": "", "lista": ["a", "b"]}) == [
        "nascimento data: 3 de maio", "lista: a, b"]


def test_bad_lines_are_named_skipped_and_counted(tmp_path, articles):
    path = tmp_path / "articles.jsonl"
    good = json.dumps(articles[0], ensure_ascii=False)
    empty = json.dumps({"id": 5, "title": "Vazio", "sections": [{"heading": "", "text": ""}]})
    lines = [good, "{not json", "", json.dumps({"id": 6}), "[1, 2]", empty,
             json.dumps(articles[1], ensure_ascii=False), good]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = ReadReport()
    chunks = list(iter_article_chunks(path, IndexConfig(), report))
    assert report.articles == 2 and report.skipped_empty == 1
    assert len(report.bad_lines) == 4  # bad JSON, no title, not an object, duplicate id
    assert any(":2:" in b for b in report.bad_lines) and any(":8:" in b and "duplicate" in b
                                                             for b in report.bad_lines)
    assert {c.title for c in chunks} == {articles[0]["title"], articles[1]["title"]}

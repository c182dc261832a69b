"""`compara ingest` end to end: outputs, report, workers, resume, damaged dumps, atomic re-runs."""

import json
import subprocess
import sys

import pytest

from core.io import read_jsonl
from ingest import pipeline
from ingest.config import IngestConfig
from ingest.pipeline import IngestFailed, run_ingest


def _outputs(folder):
    return {name: (folder / name).read_text(encoding="utf-8") for name in pipeline.OUTPUTS
            if name != "ingest_report.json"}


def test_sample_outputs_and_report(sample_ingest):
    report = json.loads((sample_ingest / "ingest_report.json").read_text())
    assert report["status"] == "complete"
    assert report["articles"] == 51 and report["redirects"] == 16
    assert report["skipped"] == {"disambiguation": 2, "namespace": 9, "stub": 1}
    assert report["pages_seen"] == 79 and report["problem_count"] == 0
    articles = read_jsonl(sample_ingest / "articles.jsonl")
    titles = {a["title"] for a in articles}
    assert "Tiradentes" in titles and "Amazonas (desambiguação)" not in titles
    assert not any(":" in t.split(" ")[0] for t in titles)  # no other-namespace pages
    tira = next(a for a in articles if a["title"] == "Tiradentes")
    assert set(tira) >= {"id", "title", "url", "revision_id", "timestamp", "sections", "text",
                         "infobox", "infobox_type", "categories", "aliases"}
    assert tira["aliases"] == ["Joaquim José da Silva Xavier"]
    assert tira["url"] == "https://pt.wikipedia.org/wiki/Tiradentes"
    assert tira["sections"][0]["heading"] == "" and tira["sections"][0]["level"] == 0
    assert tira["categories"] and tira["infobox"]
    carnaval = next(a for a in articles if a["title"] == "Carnaval do Brasil")
    assert "Carnaval brasileiro" in carnaval["aliases"]  # redirect to a section anchor
    redirects = read_jsonl(sample_ingest / "redirects.jsonl")
    assert {"title": "CPLP", "target": "Comunidade dos Países de Língua Portuguesa"}.items() <= \
        next(r for r in redirects if r["title"] == "CPLP").items()
    train = read_jsonl(sample_ingest / "instructions.train.jsonl")
    val = read_jsonl(sample_ingest / "instructions.val.jsonl")
    assert report["instructions"]["train"] == len(train) and report["instructions"]["val"] == len(val)
    assert 0.04 < len(val) / (len(train) + len(val)) < 0.14


@pytest.mark.parametrize("workers", [0, 2])
def test_any_number_of_workers_writes_the_same(tmp_path, sample_dump, sample_ingest, workers):
    run_ingest(sample_dump, tmp_path, IngestConfig(workers=workers, batch_pages=5))
    assert _outputs(tmp_path) == _outputs(sample_ingest)


def test_bz2_dump_gives_the_same_outputs(tmp_path, sample_dump, sample_ingest):
    import bz2

    dump = tmp_path / "d.xml.bz2"
    dump.write_bytes(bz2.compress(sample_dump.read_bytes()))
    run_ingest(dump, tmp_path / "out", IngestConfig())
    assert _outputs(tmp_path / "out") == _outputs(sample_ingest)


def test_a_killed_run_resumes_without_loss_or_duplicates(tmp_path, sample_dump, sample_ingest,
                                                         monkeypatch):
    monkeypatch.setattr(pipeline, "_STATE_EVERY_S", 0.0)
    real = pipeline.process_page
    seen = {"n": 0}

    def dying(page, cfg):
        seen["n"] += 1
        if seen["n"] == 40:
            raise KeyboardInterrupt  # the user pressed Ctrl-C, or the machine went down
        return real(page, cfg)

    monkeypatch.setattr(pipeline, "process_page", dying)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):  # workers=0: the interrupt hits the main process
        run_ingest(sample_dump, out, IngestConfig(batch_pages=8, workers=0))
    state = json.loads((out / pipeline.PARTIAL / "state.json").read_text())
    assert 0 < state["pages_done"] < 79
    assert not (out / "articles.jsonl").exists()  # nothing half-published
    # A partial line left by the kill is repaired, then the run continues where it stopped.
    with open(out / pipeline.PARTIAL / "articles.partial.jsonl", "a") as fh:
        fh.write('{"id": 99, "title": "meia lin')
    monkeypatch.setattr(pipeline, "process_page", real)
    report = run_ingest(sample_dump, out, IngestConfig(batch_pages=8, workers=2), resume=True)
    assert report["pages_seen"] == 79 and report["articles"] == 51
    assert _outputs(out) == _outputs(sample_ingest)
    assert not (out / pipeline.PARTIAL).exists()


def test_resume_with_other_settings_is_refused(tmp_path, sample_dump, monkeypatch):
    from core.io import InputError

    monkeypatch.setattr(pipeline, "_STATE_EVERY_S", 0.0)
    real = pipeline.process_page

    def dying(page, cfg):
        if page.id > 2000:
            raise KeyboardInterrupt
        return real(page, cfg)

    monkeypatch.setattr(pipeline, "process_page", dying)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(sample_dump, tmp_path, IngestConfig(batch_pages=4, workers=0))
    monkeypatch.setattr(pipeline, "process_page", real)
    with pytest.raises(InputError, match="another dump or other settings"):
        run_ingest(sample_dump, tmp_path, IngestConfig(batch_pages=4, workers=0, min_article_chars=10),
                   resume=True)


def test_truncated_dump_keeps_the_good_part_and_fails_clearly(tmp_path, sample_dump):
    xml = sample_dump.read_bytes()
    cut = tmp_path / "cut.xml"
    cut.write_bytes(xml[: int(len(xml) * 0.55)])
    with pytest.raises(IngestFailed) as err:
        run_ingest(cut, tmp_path / "out", IngestConfig())
    report = err.value.report
    assert report["status"] == "incomplete" and 10 < report["articles"] < 51
    assert str(cut) in str(err.value)
    articles = read_jsonl(tmp_path / "out/articles.jsonl")  # every line is complete JSON
    assert len(articles) == report["articles"]


def test_page_without_text_and_huge_page_are_reported_by_name(tmp_path, sample_dump):
    xml = sample_dump.read_text(encoding="utf-8")
    start = xml.index("<title>Alpaca</title>")
    t0 = xml.index('xml:space="preserve">', start) + len('xml:space="preserve">')
    t1 = xml.index("</text>", t0)
    dump = tmp_path / "d.xml"
    dump.write_text(xml[:t0] + xml[t1:], encoding="utf-8")
    report = run_ingest(dump, tmp_path / "out", IngestConfig(max_page_bytes=7000))
    messages = " ".join(p["message"] for p in report["problems"])
    assert "'Alpaca'" in messages and "no text" in messages
    assert "over ingest.max_page_bytes" in messages
    assert report["skipped"]["empty"] == 1 and report["skipped"]["too_large"] >= 1
    assert report["status"] == "complete"


def test_a_failed_rerun_leaves_the_previous_outputs_untouched(tmp_path, sample_dump, monkeypatch):
    run_ingest(sample_dump, tmp_path, IngestConfig())
    before = _outputs(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("ingest.instructions.alias_instructions", broken)
    with pytest.raises(RuntimeError):
        run_ingest(sample_dump, tmp_path, IngestConfig())
    assert _outputs(tmp_path) == before


def test_cli_end_to_end_with_json_summary(tmp_path, sample_dump):
    cmd = [sys.executable, "-m", "compara", "-q", "ingest", str(sample_dump), "--out",
           str(tmp_path), "--max-pages", "20", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["pages_seen"] == 20 and summary["articles"] > 10
    bad = subprocess.run([sys.executable, "-m", "compara", "ingest", str(tmp_path / "none.xml"),
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "none.xml" in bad.stderr and "Traceback" not in bad.stderr

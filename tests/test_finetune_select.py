"""What the adapter trains on: records chosen by fact or by the questions asked, and reading
tasks built from the index (the gold passage among distractors, or the abstention answer)."""

import json
import re
from collections import Counter

import pytest

from core.io import read_jsonl
from core.prompts import RagTemplate
from finetune.data import select_records
from finetune.reading import build_reading_records, load_index_chunks
from ingest.config import InstructionConfig
from ingest.instructions import generate
from rag.config import IndexConfig
from rag.store import IndexRefused, build_index


@pytest.fixture(scope="module")
def records(sample_articles):
    return [r for _, r in generate(sample_articles[:12], InstructionConfig(val_fraction=0.0))]


@pytest.fixture(scope="module")
def chunks(tmp_path_factory, sample_ingest):
    from rag.embedders import HashEmbeddings

    out = tmp_path_factory.mktemp("reading-index") / "idx"
    build_index(sample_ingest / "articles.jsonl", out, IndexConfig(), embedder=HashEmbeddings())
    return out


def test_select_by_facts_keeps_every_phrasing_of_a_fact(records):
    chosen, report = select_records(records, 90, "facts")
    assert len(chosen) == 90 and report["mode"] == "facts"
    per_fact = Counter(r["fact"] for r in chosen if r.get("fact"))
    full = Counter(r["fact"] for r in records if r.get("fact"))
    # all phrasings of a fact travel together (only the last fact may be cut by the limit)
    assert sum(per_fact[f] < full[f] for f in per_fact) <= 1
    assert len({r["task"] for r in chosen}) >= 3  # task types take turns


def test_select_by_questions_puts_their_facts_first(records, sample_articles):
    title = sample_articles[3]["title"]
    answers = [r for r in records if r["task"] == "fact" and r["source_title"] == title][:2]
    refs = [[a["output"].split(",")[0].rstrip(".")] for a in answers]
    chosen, report = select_records(records, 12, "questions", refs)
    assert report["questions_with_answer_in_data"] == len(refs)
    head = " ".join(r["output"] for r in chosen[:8])
    assert all(ref[0] in head for ref in refs)
    again, _ = select_records(records, 12, "questions", refs)
    assert [r["id"] for r in again] == [r["id"] for r in chosen]  # deterministic


def test_reading_records_hold_the_gold_passage_among_distractors(records, chunks):
    built, report = build_reading_records(records, load_index_chunks(chunks), count=30, k=3,
                                          no_gold_share=0.3, seed=7)
    tpl = RagTemplate.load()
    assert report["records"] == len(built) >= 10
    assert 0 < report["without_gold"] < report["records"]
    positions = Counter()
    for rec in built:
        assert rec["task"] == "reading" and rec["input"].count("\n[") + rec["input"].startswith("[") >= 2
        assert rec["instruction"] == tpl.fill("x", [])[0]  # the RAG arms' instruction
        passages = rec["input"].split("Pergunta:")[0]
        if rec["gold"]:
            n = rec["gold_position"]
            positions[n] += 1
            assert rec["output"].endswith(f"[{n}]")
            body = rec["output"][: -len(f" [{n}]")].rstrip(".")[:80]
            block = passages.split(f"[{n}] ", 1)[1].split("\n\n[", 1)[0]
            # the output's sentence, or for an infobox or table fact its value
            assert block.startswith(rec["source_title"])
            assert body in block or rec["answer"] in block
            # the distractors come from other articles
            others = [b for b in passages.split("\n\n") if b.startswith("[") and not b.startswith(f"[{n}]")]
            assert all(not b.split("] ", 1)[1].startswith(rec["source_title"] + "\n") for b in others)
        else:
            assert rec["output"] == tpl.abstain
    assert len(positions) >= 2  # the gold passage is not always in the same slot
    again, _ = build_reading_records(records, load_index_chunks(chunks), count=30, k=3,
                                     no_gold_share=0.3, seed=7)
    assert [r["input"] for r in again] == [r["input"] for r in built]


def test_reading_refuses_an_index_that_does_not_verify(chunks, tmp_path):
    import shutil

    bad = tmp_path / "idx"
    shutil.copytree(chunks, bad)
    with open(bad / "chunks.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(IndexRefused):
        load_index_chunks(bad)
    assert read_jsonl(chunks / "chunks.jsonl")  # the good one still loads


def test_reading_records_use_the_index_own_bm25(records, chunks):
    from finetune.reading import load_index_bm25

    loaded = load_index_chunks(chunks)
    bm25 = load_index_bm25(chunks)
    assert bm25 is not None
    own, _ = build_reading_records(records, loaded, count=20, k=3, seed=7, bm25=bm25)
    built, _ = build_reading_records(records, loaded, count=20, k=3, seed=7)
    # the same distractors as a BM25 built on the spot over the same chunks
    assert [r["input"] for r in own] == [r["input"] for r in built]


def test_the_demo_selection_covers_its_questions_and_adds_reading_tasks(sample_ingest, chunks, repo_root):
    from compara.config import load_config
    from finetune.data import load_splits
    from finetune.train import choose_training_records

    cfg = load_config(repo_root / "configs" / "sample.yaml",
                      [f"paths.data={sample_ingest}", f"paths.index={chunks}",
                       "finetune.max_train_records=60", "finetune.select_questions=6",
                       "finetune.reading=0.2"])
    ft = cfg.finetune
    train, _, report = load_splits(sample_ingest, tasks=ft.tasks, max_train=ft.max_train_records,
                                   select=ft.select)
    chosen = choose_training_records(cfg, train, report)
    assert len(chosen) <= 60 and report.used["train"] == len(chosen)
    assert report.selection["mode"] == "questions" and report.selection["questions"] >= 4
    assert report.selection["questions_with_answer_in_data"] >= report.selection["questions"] - 1
    assert 0 < sum(r["task"] == "reading" for r in chosen) <= 12
    assert report.reading["records"] == sum(r["task"] == "reading" for r in chosen)


def test_reading_records_follow_a_selection_order(records, chunks):
    """After a selection by fact coverage the reading records with the gold passage take the
    facts in that order (the facts of the questions asked first), the abstention examples the
    facts at its end; without one they are drawn by the seed."""
    loaded = load_index_chunks(chunks)
    facts = [r for r in records if r["task"] == "fact"]
    order = list(reversed(facts))  # an order that is neither the file's nor the seed's
    rank = {r["id"]: i for i, r in enumerate(order)}
    ordered, report = build_reading_records(order, loaded, count=8, k=3, seed=7, ordered=True,
                                            no_gold_share=0.25)
    assert report["order"] == "selection" and len(ordered) >= 4
    assert report["without_gold"] == 2  # a quarter of 8, exactly
    source = {r["fact"]: min(rank[x["id"]] for x in order if x["fact"] == r["fact"]) for r in ordered}
    gold = [source[r["fact"]] for r in ordered if r["gold"]]
    assert gold == sorted(gold)  # the selection's order, kept
    assert gold[0] < len(order) // 4  # from its front
    assert min(source[r["fact"]] for r in ordered if not r["gold"]) > max(gold)  # from its end
    drawn, report = build_reading_records(order, loaded, count=8, k=3, seed=7)
    assert report["order"] == "seeded hash"
    assert [r["fact"] for r in drawn] != [r["fact"] for r in ordered]
    again, _ = build_reading_records(list(reversed(order)), loaded, count=8, k=3, seed=7)
    assert [r["id"] for r in again] == [r["id"] for r in drawn]  # the seed's draw ignores the order


def test_reading_records_read_infobox_and_table_values_in_their_passage(records, chunks):
    """An infobox or table fact's output is a sentence of ours, in no passage: its reading
    record finds the passage of its article that holds the value (the record's ``answer``),
    and no distractor holds that value."""
    loaded = load_index_chunks(chunks)
    kinds = [r for r in records if r["task"] in ("infobox", "table")]
    assert kinds and all(r.get("answer") and r["answer"] in r["output"] for r in kinds)
    built, report = build_reading_records(kinds, loaded, count=12, k=3, seed=3, no_gold_share=0.25)
    assert report["records"] == 12 and report["without_gold"] == 3
    assert report["gold_found_by"]["answer"] == 9 and report["skipped"]["no_gold_chunk"] == 0
    by_fact = {r["fact"]: r for r in kinds}
    for rec in built:
        answer = by_fact[rec["fact"]]["answer"]
        blocks = rec["input"].split("Pergunta:")[0].split("\n\n[")
        word = re.compile(rf"(?<!\w){re.escape(answer)}(?!\w)")
        holding = [i for i, b in enumerate(blocks, 1) if word.search(b)]
        if rec["gold"]:
            n = rec["gold_position"]
            assert holding == [n] and rec["output"].endswith(f"[{n}]")
        else:
            assert holding == [] and rec["output"] == RagTemplate.load().abstain
    # without the value, such a fact has nothing to find its passage by
    bare = [{k: v for k, v in r.items() if k != "answer"} for r in kinds]
    _, report = build_reading_records(bare, loaded, count=12, k=3, seed=3)
    assert report["records"] == 0 and report["skipped"]["no_gold_chunk"] > 0

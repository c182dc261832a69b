"""The instruction set: task types, paraphrases, bounds, dedup and a split that never reshuffles."""

import hashlib
from collections import Counter

from core.io import read_jsonl
from core.prompts import PromptTemplate
from ingest.config import TASKS, InstructionConfig
from ingest.instructions import (
    InstructionStats,
    article_instructions,
    generate,
    record_id,
    split_of,
    split_sentences,
    splits_of,
    take_sentences,
)


def test_sentence_splitting_respects_portuguese_abbreviations():
    text = "D. Pedro II governou até 1889. Morreu em Paris. O Sr. Silva e a Dra. Ana chegaram no séc. XIX. Fim."
    assert split_sentences(text) == ["D. Pedro II governou até 1889.", "Morreu em Paris.",
                                     "O Sr. Silva e a Dra. Ana chegaram no séc. XIX.", "Fim."]
    assert take_sentences(text, 50) == "D. Pedro II governou até 1889. Morreu em Paris."


def test_sentence_ends_keep_their_closing_quote_or_parenthesis():
    text = 'Ele disse "basta." Depois saiu. (Voltou em 1890.) E então? «Nunca!» Fim…  2 anos após.'
    assert split_sentences(text) == ['Ele disse "basta."', "Depois saiu.", "(Voltou em 1890.)",
                                     "E então?", "«Nunca!»", "Fim…", "2 anos após."]
    # no capital (or digit, or opening quote) after the stop: no sentence break
    assert split_sentences("Custou 3 mil réis. e mais nada.") == ["Custou 3 mil réis. e mais nada."]


def test_split_is_a_hash_of_the_id_keyed_with_the_salt():
    ids = [record_id("fact", f"Pergunta {i}?", "") for i in range(300)]
    expected = ["val" if int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=b"compara")
                                        .digest(), "big") < 0.08 * 2**64 else "train" for i in ids]
    assert splits_of(ids, 0.08, "compara") == expected == [split_of(i, 0.08, "compara") for i in ids]
    assert 5 < expected.count("val") < 50


def test_every_task_type_with_paraphrases(fixtures_dir):
    art = read_jsonl(fixtures_dir / "articles.jsonl")[1]  # a biography
    cfg = InstructionConfig(paraphrases=3)
    recs = article_instructions(art, cfg)
    tasks = Counter(r["task"] for r in recs)
    assert {"definition", "section", "infobox"} <= set(tasks)
    # a one-sentence lead is the definition already: no summary repeating it
    assert "summary" not in tasks
    # each infobox fact is asked three ways, all with the same answer
    facts = Counter(r["fact"] for r in recs if r["task"] == "infobox")
    assert facts and all(n == 3 for n in facts.values())
    born = [r for r in recs if r.get("fact") == "infobox:Ana Lúcia Prado:nascimento_local"]
    assert len({r["instruction"] for r in born}) == 3 and len({r["output"] for r in born}) == 1
    assert "Recife" in born[0]["output"]
    # the value travels with the record, as the article writes it (reading tasks look for it)
    assert all(r["answer"] in r["output"] for r in recs if r["task"] == "infobox")
    assert "Recife" in born[0]["answer"] and "Ana Lúcia Prado" not in born[0]["answer"]
    assert any(r["instruction"] == "Quem foi Ana Lúcia Prado?" for r in recs)
    for r in recs:
        assert r["source_title"] == "Ana Lúcia Prado" and r["output"].strip()
        assert set(r) >= {"id", "instruction", "input", "output", "source_title", "task"}


def test_summary_is_the_lead_when_it_says_more_than_the_definition(sample_articles):
    art = next(a for a in sample_articles if a["title"] == "Rio Amazonas")
    recs = article_instructions(art, InstructionConfig())
    (definition, *_), (summary, *_) = ([r for r in recs if r["task"] == t] for t in ("definition", "summary"))
    assert len(summary["output"]) > len(definition["output"])
    assert art["sections"][0]["text"].startswith(summary["output"][:200])


def test_tables_become_fact_questions(fixtures_dir):
    art = read_jsonl(fixtures_dir / "articles.jsonl")[0]
    recs = [r for r in article_instructions(art, InstructionConfig()) if r["task"] == "table"]
    answers = {r["output"] for r in recs}
    assert "Córrego Fundo — Comprimento: 42 km." in answers
    assert "Ribeirão das Pedras — Margem: direita." in answers
    assert {r["answer"] for r in recs if r["output"] == "Córrego Fundo — Comprimento: 42 km."} == {"42 km"}


def test_a_table_whose_first_column_repeats_is_keyed_by_a_column_that_names_its_rows(fixtures_dir):
    """A medal table's first column repeats ("Bronze" twice): keyed by it, the second bronze
    row's questions would be the first's and be dropped as duplicates. Its rows are named by
    the column with the most distinct values (the athlete), and the medal is asked too."""
    art = dict(read_jsonl(fixtures_dir / "articles.jsonl")[0])
    rows = ["Medalha: Ouro; Atleta: Ana Reis; Prova: 100 m; Data: 3 de agosto",
            "Medalha: Bronze; Atleta: Caio Lima; Prova: Salto em altura; Data: 4 de agosto",
            "Medalha: Bronze; Atleta: Rui Nunes; Prova: Acima de 80 kg; Data: 9 de agosto",
            "Medalha: Prata; Atleta: Ana Reis; Prova: Salto em altura; Data: 9 de agosto",
            "Medalha: Bronze; Atleta: Léo Dias; Prova: Maratona; Data: 10 de agosto",
            "Medalha: Ouro; Atleta: Bia Costa; Prova: Remo; Data: 12 de agosto"]
    art["sections"] = [*art["sections"], {"heading": "Medalhas", "level": 2,
                                          "text": "As medalhas do clube.\n" + "\n".join(rows)}]
    recs = [r for r in article_instructions(art, InstructionConfig()) if r["task"] == "table"]
    outputs = {r["output"] for r in recs}
    assert {"Rui Nunes — Prova: Acima de 80 kg.", "Caio Lima — Prova: Salto em altura.",
            "Rui Nunes — Medalha: Bronze.", "Ana Reis — Data: 3 de agosto."} <= outputs
    assert not any(o.startswith("Bronze —") for o in outputs)
    # no column is distinct here (Ana Reis won twice; the high jump and the 9th gave two
    # medals): athletes, events and dates tie, the first of them names the rows, and her first
    # row is the one asked
    assert "Ana Reis — Prova: 100 m." in outputs and "Ana Reis — Prova: Salto em altura." not in outputs
    asked = [r for r in recs if r["output"] == "Rui Nunes — Prova: Acima de 80 kg."]
    assert len(asked) == 3 and all("Rui Nunes" in r["instruction"] for r in asked)
    assert {r["answer"] for r in asked} == {"Acima de 80 kg"}
    # the article's other table, keyed by its first column as before
    assert "Córrego Fundo — Comprimento: 42 km." in outputs


def test_lengths_are_bounded_at_sentence_ends(sample_articles):
    cfg = InstructionConfig(max_output_chars=300)
    for art in sample_articles[:10]:
        for r in article_instructions(art, cfg):
            assert len(r["output"]) <= 450
            if r["task"] in {"summary", "section", "definition"}:
                # ends at a sentence or list-item end, never on an introduction of what was cut
                assert r["output"].rstrip()[-1] in ".!?…»”)\";", r["output"][-40:]


def test_split_is_stable_when_pages_are_added(sample_articles):
    cfg = InstructionConfig()
    some = dict((r["id"], s) for s, r in generate(sample_articles[:20], cfg))
    more = dict((r["id"], s) for s, r in generate(sample_articles, cfg))
    assert all(more[i] == s for i, s in some.items())
    again = [(s, r["id"]) for s, r in generate(sample_articles, cfg)]
    assert again == [(s, r["id"]) for s, r in generate(sample_articles, cfg)]
    salted = dict((r["id"], s) for s, r in generate(sample_articles, cfg.replace(split_salt="x")))
    assert salted != more  # another salt draws another split


def test_rows_are_counted_as_one_add_each():
    rows = [(1, "train", "definition", 40), (2, "val", "definition", 40), (3, "train", "fact", 90),
            (4, "train", "fact", 95), (5, "val", "table", 20), (6, "train", "fact", 10)]
    one, bulk = InstructionStats(), InstructionStats()
    for _, split, task, chars in rows:
        one.add(task, split, chars)
    bulk.add_rows(rows)
    bulk.add_rows([])
    assert list(bulk.by_task.items()) == list(one.by_task.items())  # same counts, same order
    assert bulk.by_task["fact"] == {"train": 3, "val": 0, "output_chars": 195}


def test_duplicates_are_removed_across_articles(sample_articles):
    twin = dict(sample_articles[0])
    stats = InstructionStats()
    recs = list(generate([sample_articles[0], twin], InstructionConfig(), stats))
    assert stats.duplicates_removed == len(recs)
    keys = [(r["instruction"], r["input"]) for _, r in recs]
    assert len(keys) == len(set(keys))


def test_records_render_with_the_one_template(sample_ingest):
    tpl = PromptTemplate.load()
    for rec in read_jsonl(sample_ingest / "instructions.val.jsonl")[:50]:
        prompt, response = tpl.render_record(rec)
        assert prompt.endswith("### Resposta:\n") and response == rec["output"].strip()
        assert ("### Entrada:" in prompt) == bool(rec["input"])


def test_task_selection_and_coverage_of_the_sample(sample_ingest):
    train = read_jsonl(sample_ingest / "instructions.train.jsonl")
    tasks = Counter(r["task"] for r in train)
    assert set(tasks) == set(TASKS)
    articles = read_jsonl(sample_ingest / "articles.jsonl")
    assert len({r["source_title"] for r in train}) == len(articles)
    only = InstructionConfig(tasks=["infobox"])
    art = read_jsonl(sample_ingest / "articles.jsonl")[0]
    assert {r["task"] for r in article_instructions(art, only)} == {"infobox"}

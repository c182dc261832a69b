"""The comparison on the tiny random model: arms, prompts, batch runs that resume and cache."""

from __future__ import annotations

import json
import threading

import pytest

from compara.comparison import ArmUnavailable, Comparison
from compara.config import ExperimentConfig
from core.config import GenerationConfig, ModelConfig
from core.io import InputError, read_jsonl
from core.prompts import PromptTemplate, RagTemplate
from rag.config import IndexConfig, RetrievalConfig

QUESTIONS = ["Onde nasce o Rio Verde-Claro?", "Qual era a profissão de Ana Lúcia Prado?",
             "Qual é o gentílico de Vila Serena?"]


@pytest.fixture(scope="module")
def loaded():
    from core.models import load_base

    return load_base(ModelConfig(base="tiny-random-llama", quantize="none", dtype="float32"))


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, fixtures_dir):
    from rag.embedders import HashEmbeddings
    from rag.store import build_index

    out = tmp_path_factory.mktemp("cmp") / "idx"
    build_index(fixtures_dir / "articles.jsonl", out, IndexConfig(), embedder=HashEmbeddings())
    return out


@pytest.fixture(scope="module")
def index(index_dir):
    from rag.embedders import HashEmbeddings
    from rag.retrieve import load_index

    return load_index(index_dir, IndexConfig(), RetrievalConfig(k=2, fetch_k=10),
                      embedder=HashEmbeddings())


def make_comparison(loaded, index, index_dir, **decoding):
    settings = {"max_new_tokens": 8, "batch_size": 2, **decoding}
    return Comparison(loaded, GenerationConfig(**settings), PromptTemplate.load(), RagTemplate.load(),
                      index, RetrievalConfig(k=2, fetch_k=10), index_dir=str(index_dir))


@pytest.fixture(scope="module")
def comparison(loaded, index, index_dir):
    return make_comparison(loaded, index, index_dir)


def test_each_arm_answers_with_the_record_it_promises(comparison, loaded):
    assert comparison.arms == ["base", "rag"]  # no adapter loaded
    for arm in comparison.arms:
        (ans,) = comparison.answer(arm, [QUESTIONS[0]])
        assert isinstance(ans.text, str) and 0 < ans.tokens_out <= 8 or ans.stopped_on_eos
        assert ans.tokens_in == len(loaded.tokenizer(ans.prompt).input_ids)
        assert ans.latency_s > 0 and isinstance(ans.stopped_on_eos, bool)
        assert ans.identity["arm"] == arm and ans.identity["base_model"] == "tiny-random-llama"
        rec = ans.to_record()
        assert set(rec) >= {"answer", "prompt", "passages", "tokens_in", "tokens_out",
                            "latency_s", "tokens_per_s", "stopped_on_eos", "identity"}
    (base,) = comparison.answer("base", [QUESTIONS[0]])
    (rag,) = comparison.answer("rag", [QUESTIONS[0]])
    assert base.passages == [] and base.identity["index"] is None
    assert [p["rank"] for p in rag.passages] == [1, 2] and rag.identity["index"]
    assert {"title", "section", "score", "url", "text"} <= set(rag.passages[0])


def test_prompts_come_from_the_one_template(comparison):
    tpl, rag_tpl = PromptTemplate.load(), RagTemplate.load()
    base = comparison.prepare("base", QUESTIONS[1])
    assert base.prompt == tpl.render(QUESTIONS[1]) and not base.truncated
    rag = comparison.prepare("rag", QUESTIONS[1])
    assert rag.prompt == rag_tpl.render(tpl, QUESTIONS[1], rag.passages)
    assert "Ana Lúcia Prado" in {p["title"] for p in rag.passages}


def test_every_arm_has_the_same_model_and_decoding(comparison):
    idents = [comparison.identity(arm) for arm in comparison.arms]
    for key in ("base_model", "fingerprint", "quantize", "dtype", "decoding", "template"):
        assert len({json.dumps(i[key], sort_keys=True) for i in idents}) == 1


def test_batched_generation_gives_the_answers_of_one_at_a_time(loaded, index, index_dir):
    one = make_comparison(loaded, index, index_dir, batch_size=1)
    three = make_comparison(loaded, index, index_dir, batch_size=3)
    assert [a.text for a in one.answer("base", QUESTIONS)] == \
        [a.text for a in three.answer("base", QUESTIONS)]


def test_an_over_long_prompt_loses_passages_before_the_question(loaded, index, index_dir):
    small = make_comparison(loaded, index, index_dir, max_prompt_tokens=420)
    full = small.prepare("base", QUESTIONS[0]).prompt
    cut = small.prepare("rag", QUESTIONS[0])
    prompt, passages, truncated = cut.prompt, cut.passages, cut.truncated
    assert truncated and len(loaded.tokenizer(prompt).input_ids) <= 420
    assert QUESTIONS[0] in prompt  # the question survived; the passages paid
    assert len(passages) <= 2
    assert len(loaded.tokenizer(full).input_ids) < 420


def test_arms_without_their_adapter_or_index_are_refused(loaded):
    bare = Comparison(loaded, GenerationConfig(max_new_tokens=4), PromptTemplate.load())
    assert bare.arms == ["base"]
    with pytest.raises(ArmUnavailable, match="adapter"):
        bare.answer("finetuned", ["x"])
    with pytest.raises(ArmUnavailable, match="index"):
        bare.answer("rag", ["x"])
    with pytest.raises(ArmUnavailable, match="unknown arm"):
        bare.check("oracle")


def test_generation_is_serialised_between_threads(comparison):
    expected = [a.text for a in comparison.answer("base", QUESTIONS)]
    results: dict[int, list[str]] = {}

    def work(i):
        results[i] = [a.text for a in comparison.answer("base", QUESTIONS)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results.values())


# -- the batch runner -------------------------------------------------------------------------

@pytest.fixture()
def cfg(tmp_path, sample_ingest):
    cfg = ExperimentConfig()
    cfg.paths = cfg.paths.replace(runs=str(tmp_path / "runs"), data=str(sample_ingest))
    cfg.generation = GenerationConfig(max_new_tokens=6, batch_size=2)
    cfg.eval = cfg.eval.replace(bootstrap_resamples=50)
    return cfg


def test_batch_writes_every_answer_summary_and_report(cfg, comparison, fixtures_dir, tmp_path):
    from compara.batch import run_batch

    out = tmp_path / "runs/r1"
    summary = run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=comparison)
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 5 * 2
    assert {(r["question_id"], r["arm"]) for r in records} == {
        (f"t-0{i}", arm) for i in range(1, 6) for arm in ("base", "rag")}
    for name in ("summary.json", "summary.csv", "report.html", "run.json", "exposure.jsonl"):
        assert (out / name).exists(), name
    run = json.loads((out / "run.json").read_text())
    assert run["arms"] == ["base", "rag"] and run["hashes"]["model_fingerprint"]
    # where and in what precision the answers were computed
    assert {"device", "dtype", "cpu_capability", "bf16_native"} <= set(run["model"])
    assert all(r["finish_reason"] in ("eos", "stop_string", "max_tokens") for r in records)
    assert run["answers"]["generated"] == 10
    assert set(summary["arms"]) == {"base", "rag"}
    assert all("metrics" in r and "contains" in r["metrics"] for r in records)


def test_a_crashed_batch_resumes_without_loss_or_duplicates(cfg, loaded, index, index_dir,
                                                             fixtures_dir, tmp_path, monkeypatch):
    from compara.batch import run_batch

    comparison = make_comparison(loaded, index, index_dir, max_new_tokens=6)
    real = comparison.generate_prompts
    calls = {"n": 0}

    def crashing(arm, prompts, on_batch=None, score=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the second window (here: the second arm's)
            raise KeyboardInterrupt  # the machine went down mid-run
        return real(arm, prompts, on_batch, score=score)

    monkeypatch.setattr(comparison, "generate_prompts", crashing)
    out = tmp_path / "runs/crash"
    cfg.paths = cfg.paths.replace(runs=str(tmp_path / "fresh-cache"))  # no answers cached yet
    with pytest.raises(KeyboardInterrupt):
        run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=comparison)
    kept = read_jsonl(out / "results.jsonl")
    assert 0 < len(kept) < 10
    with open(out / "results.jsonl", "a") as fh:  # a line torn by the crash
        fh.write('{"question_id": "t-0')
    monkeypatch.setattr(comparison, "generate_prompts", real)
    summary = run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=comparison)
    records = read_jsonl(out / "results.jsonl")
    keys = [(r["question_id"], r["arm"]) for r in records]
    assert len(keys) == 10 and len(set(keys)) == 10
    assert summary["run"]["already_written"] == len(kept)
    assert records[: len(kept)] == kept  # nothing written before the crash was touched


def test_an_unchanged_rerun_is_answered_from_the_cache(cfg, comparison, fixtures_dir, tmp_path,
                                                       monkeypatch):
    from compara.batch import run_batch

    first = run_batch(cfg, fixtures_dir / "questions.jsonl", tmp_path / "runs/a", comparison=comparison)
    assert first["run"]["generated"] + first["run"]["from_cache"] == 10

    def no_generation(*args, **kwargs):
        raise AssertionError("the model was called although every answer is cached")

    monkeypatch.setattr(comparison, "generate_prompts", no_generation)
    second = run_batch(cfg, fixtures_dir / "questions.jsonl", tmp_path / "runs/b", comparison=comparison)
    assert second["run"]["from_cache"] == 10 and second["run"]["generated"] == 0
    a = {(r["question_id"], r["arm"]): r["answer"] for r in read_jsonl(tmp_path / "runs/a/results.jsonl")}
    b = {(r["question_id"], r["arm"]): r["answer"] for r in read_jsonl(tmp_path / "runs/b/results.jsonl")}
    assert a == b


def test_bad_question_records_are_skipped_and_named(cfg, comparison, tmp_path):
    from compara.batch import run_batch

    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"id": "ok", "question": "Onde nasce o Rio Verde-Claro?", "reference": "Serra do Lajeado"}\n'
                     '{"id": "bad" "question": }\n'
                     '{"id": "empty", "question": ""}\n', encoding="utf-8")
    run_batch(cfg, qfile, tmp_path / "runs/bad", comparison=comparison, arms=["base"])
    records = read_jsonl(tmp_path / "runs/bad/results.jsonl")
    assert [r["question_id"] for r in records] == ["ok"]
    with pytest.raises(InputError, match="not found"):
        run_batch(cfg, tmp_path / "none.jsonl", tmp_path / "runs/x", comparison=comparison)


def test_a_run_folder_refuses_answers_of_another_configuration(cfg, loaded, index, index_dir,
                                                               fixtures_dir, tmp_path):
    from compara.batch import run_batch

    out = tmp_path / "runs/one"
    run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=make_comparison(
        loaded, index, index_dir, max_new_tokens=6), arms=["base"], limit=2)
    other = make_comparison(loaded, index, index_dir, max_new_tokens=7)
    with pytest.raises(InputError, match="another configuration"):
        run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=other, arms=["base"])


def test_a_stratified_sample_covers_every_question_type(repo_root):
    from compara.batch import stratified_sample
    from core.questions import load_questions

    questions = list(load_questions(repo_root / "questions/amostra.jsonl"))
    picked = stratified_sample(questions, 24, seed=42)
    assert len(picked) == 24 and len({q.id for q in picked}) == 24
    types = {q.type for q in questions}
    counts = {t: sum(q.type == t for q in picked) for t in types}
    assert min(counts.values()) >= 3  # 6 types, 24 questions: 4 each
    assert picked == stratified_sample(questions, 24, seed=42)  # the same every time
    order = [q.id for q in questions]
    assert [order.index(q.id) for q in picked] == sorted(order.index(q.id) for q in picked)


# -- measures without a judge in the batch ------------------------------------------------------

def _count_scoring(monkeypatch):
    """Wrap core.likelihood.score_question: the (arm, question id) pairs scored through the
    model (on the answer's prompt pass, or by score_arm), not read from the cache."""
    import core.likelihood as likelihood

    real, seen = likelihood.score_question, []

    def counting(question_id, arm, *args, **kwargs):
        seen.append((arm, question_id))
        return real(question_id, arm, *args, **kwargs)

    monkeypatch.setattr(likelihood, "score_question", counting)
    return seen


def test_batch_writes_the_measures_for_every_arm(cfg, comparison, fixtures_dir, tmp_path,
                                                 monkeypatch):
    from compara.batch import run_batch

    seen = _count_scoring(monkeypatch)
    out = tmp_path / "runs/measured"
    summary = run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=comparison)
    records = read_jsonl(out / "results.jsonl")
    with_ref = [r for r in records if r.get("reference")]
    assert with_ref and len(seen) == len(with_ref)  # each scored once, in its arm
    distractors = json.loads((out / "distractors.json").read_text())
    assert distractors["k"] == cfg.eval.distractors and distractors["seed"] == cfg.eval.seed
    for r in records:
        m = r["metrics"]
        assert "portuguese" in m and "faithfulness" in m
        if r["arm"] == "base":
            assert m["faithfulness"] is None  # no passages to be faithful to
        if not r.get("reference"):
            assert m.get("ref_logprob") is None and m.get("mc_correct") is None
            continue
        assert m["ref_logprob"] < 0 and m["ref_best"] in r["reference"]
        n_distractors = len(distractors["distractors"][r["question_id"]])
        assert m["mc_choices"] == 1 + n_distractors and m["mc_correct"] in (0.0, 1.0)
        if r["answer"].strip():
            assert -1.0 <= m["similarity"] <= 1.0
    for arm in ("base", "rag"):
        for metric in ("ref_logprob", "mc_correct", "portuguese"):
            iv = summary["per_arm"][arm]["metrics"][metric]
            assert iv["n"] > 0 or metric == "portuguese"
            if iv["n"]:
                assert iv["lo"] <= iv["mean"] <= iv["hi"]
        assert summary["per_arm"][arm]["mc_chance"] == pytest.approx(
            1 / (1 + cfg.eval.distractors), rel=0.5)
    assert any(p["metric"] == "ref_logprob" and p["diff"] is not None for p in summary["paired"])
    timing = summary["run"]["timing"]
    assert timing["measures_s"] > 0 and timing["likelihood_scored"] == len(with_ref)
    assert set(timing["per_arm"]) == {"base", "rag"}
    assert sum(t["measures_s"] for t in timing["per_arm"].values()) == pytest.approx(
        timing["measures_s"], abs=0.02)
    # the base arm's likelihood is exactly what score_arm gives on the written prompts
    from compara.comparison import score_arm
    from core.questions import Question

    base = [r for r in with_ref if r["arm"] == "base"][:2]
    again = score_arm(comparison, "base", [Question.from_record(r) for r in base],
                      {r["question_id"]: distractors["distractors"][r["question_id"]] for r in base},
                      prompts=[r["prompt"] for r in base])
    assert [s.reference_logprob for s in again] == pytest.approx(
        [r["metrics"]["ref_logprob"] for r in base], abs=1e-5)


def test_a_resumed_batch_does_not_score_again_what_is_written(cfg, comparison, fixtures_dir,
                                                              tmp_path, monkeypatch):
    from compara.batch import run_batch

    cfg.paths = cfg.paths.replace(runs=str(tmp_path / "own-cache"))  # nothing cached yet
    seen = _count_scoring(monkeypatch)
    out = tmp_path / "runs/resumed"
    run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=comparison, limit=2)
    first = list(seen)
    assert first
    before = read_jsonl(out / "results.jsonl")
    run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=comparison)
    later = seen[len(first):]
    assert later and not set(later) & set(first)  # only the questions answered now
    assert read_jsonl(out / "results.jsonl")[:len(before)] == before
    seen.clear()
    run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=comparison)
    assert seen == []  # all written
    # A new folder chooses its distractors among all the questions (the first run saw two):
    # those questions are scored anew, once; a third folder finds everything in the cache.
    run_batch(cfg, fixtures_dir / "questions.jsonl", tmp_path / "runs/b", comparison=comparison)
    seen.clear()
    run_batch(cfg, fixtures_dir / "questions.jsonl", tmp_path / "runs/c", comparison=comparison)
    assert seen == []
    lp = {name: {(r["question_id"], r["arm"]): r["metrics"].get("ref_logprob")
                 for r in read_jsonl(tmp_path / f"runs/{name}/results.jsonl")}
          for name in ("resumed", "b", "c")}
    assert lp["b"] == lp["c"]
    assert lp["resumed"] == pytest.approx(lp["b"], abs=1e-5)  # distractors change no likelihood


def test_measures_can_be_turned_off(cfg, comparison, fixtures_dir, tmp_path, monkeypatch):
    from compara.batch import run_batch

    seen = _count_scoring(monkeypatch)
    cfg.eval = cfg.eval.replace(measures=[])
    out = tmp_path / "runs/plain"
    summary = run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=comparison)
    assert seen == [] and not (out / "distractors.json").exists()
    for r in read_jsonl(out / "results.jsonl"):
        assert not {"ref_logprob", "mc_correct", "similarity", "portuguese",
                    "faithfulness"} & set(r["metrics"])
    assert summary["per_arm"]["base"]["metrics"]["ref_logprob"]["n"] == 0
    assert not any(p["metric"] == "ref_logprob" for p in summary["paired"])

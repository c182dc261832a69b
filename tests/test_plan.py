"""`compara plan` (counted vs estimated figures, JSON) and the fine-tune's budgets."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest

from compara.config import load_config
from core.io import read_jsonl

TINY_RUN = ["finetune.max_steps=2", "finetune.eval_steps=2", "finetune.batch_size=4",
            "finetune.max_length=128", "finetune.stop_check=0", "model.base=tiny-random-llama",
            "model.quantize=none"]


def ci_config(repo_root: Path, *overrides: str):
    return load_config(repo_root / "configs" / "ci.yaml", list(overrides))


def by_stage(plan: dict) -> dict[str, dict]:
    return {st["stage"]: st for st in plan["stages"]}


def test_plan_counts_what_the_outputs_hold(repo_root, sample_ingest, tmp_path):
    from compara.plan import build_plan

    cfg = ci_config(repo_root, f"paths.data={sample_ingest}", f"paths.index={tmp_path / 'none'}")
    stages = by_stage(build_plan(cfg, device="cpu"))
    report = json.loads((sample_ingest / "ingest_report.json").read_text())
    ingest = stages["ingest"]["inputs"]
    assert ingest["articles"] == {"value": report["articles"], "basis": "counted",
                                  "note": str(sample_ingest / "ingest_report.json")}
    assert ingest["pages"]["value"] == report["pages_seen"]
    records = stages["finetune"]["inputs"]["instruction_records"]
    n_lines = len(read_jsonl(sample_ingest / "instructions.train.jsonl"))
    assert records["basis"] == "counted" and records["value"] == n_lines
    chunks = stages["index"]["inputs"]["chunks"]
    assert chunks["basis"] == "counted" and chunks["value"] > report["articles"]
    # ci.yaml caps the training set at 64 records
    assert stages["finetune"]["inputs"]["train_records"]["value"] == 64


@pytest.mark.parametrize("compress", [False, True])
def test_plan_estimates_from_the_dump_and_says_so(repo_root, sample_dump, tmp_path, compress,
                                                  monkeypatch):
    from compara import plan_dump
    from compara.plan import build_plan

    monkeypatch.setattr(plan_dump, "COUNT_BYTES", 1)  # pages counted only where ingested

    dump = sample_dump
    if compress:  # a multistream .bz2 as Wikipedia writes it: a stream per 10 pages
        text = sample_dump.read_bytes()
        head, *pages = text.split(b"  <page>")
        pages[-1], foot = pages[-1].split(b"</mediawiki>")
        groups = [head] + [b"".join(b"  <page>" + p for p in pages[i:i + 10])
                           for i in range(0, len(pages), 10)] + [b"</mediawiki>" + foot]
        dump = tmp_path / "amostra-multistream.xml.bz2"
        dump.write_bytes(b"".join(bz2.compress(g) for g in groups))
    total_pages = sample_dump.read_text(encoding="utf-8").count("<page>")
    cfg = ci_config(repo_root, f"paths.dump={dump}", f"paths.data={tmp_path / 'no-ingest'}",
                    f"paths.index={tmp_path / 'no-index'}")
    stages = by_stage(build_plan(cfg, sample_pages=20, device="cpu"))
    pages = stages["ingest"]["inputs"]["pages"]
    assert pages["basis"] == "estimated" and "first 20 pages" in pages["note"]
    assert total_pages / 3 < pages["value"] < total_pages * 3  # scaled by the bytes read
    for stage, key in (("ingest", "articles"), ("index", "chunks"),
                       ("finetune", "instruction_records")):
        fig = stages[stage]["inputs"][key]
        assert fig["basis"] == "estimated" and fig["value"] > 0, (stage, fig)
    assert not (tmp_path / "no-ingest").exists()  # the probe writes nothing into the run


def test_reading_the_whole_dump_counts(repo_root, sample_dump, tmp_path):
    from compara.plan import build_plan

    cfg = ci_config(repo_root, f"paths.dump={sample_dump}", f"paths.data={tmp_path / 'none'}")
    pages = by_stage(build_plan(cfg, sample_pages=10_000, device="cpu"))["ingest"]["inputs"]["pages"]
    assert pages["basis"] == "counted"
    assert pages["value"] == sample_dump.read_text(encoding="utf-8").count("<page>")


@pytest.fixture
def tiny_with_rate(monkeypatch):
    """The tiny model's tokenizer on disk and a (test) rate for it on the CPU."""
    from core.models.convert import ensure_converted
    from core.models.registry import REGISTRY
    from finetune import rate

    ensure_converted(REGISTRY["tiny-random-llama"])
    for table in (rate.FINETUNE_CPU, rate.FINETUNE_CPU_FP32):  # whatever this CPU computes in
        monkeypatch.setitem(table, "tiny-random-llama",
                            rate.Rate(100.0, "train tokens/s", "a test figure"))


def test_plan_json_has_every_stage_and_a_source_for_every_rate(repo_root, sample_ingest,
                                                                tiny_with_rate):
    from typer.testing import CliRunner

    from compara.cli import app

    res = CliRunner().invoke(app, ["plan", "-c", str(repo_root / "configs" / "ci.yaml"),
                                   "-s", f"paths.data={sample_ingest}", "-s",
                                   "model.device=cpu", "--no-probe", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert [st["stage"] for st in plan["stages"]] == ["ingest", "index", "finetune", "batch"]
    for st in plan["stages"]:
        for key in ("disk_bytes", "peak_memory_bytes", "seconds_here", "seconds_reference_gpu"):
            assert st[key]["basis"] in ("counted", "estimated", "unknown")
            assert (st[key]["value"] is None) == (st[key]["basis"] == "unknown")
        for key in ("rate_here", "rate_reference_gpu"):
            rate = st[key]
            if rate and rate["value"] is not None:
                assert rate["source"] and rate["unit"]
    stages = by_stage(plan)
    assert stages["ingest"]["rate_here"]["source"].startswith("BENCHMARKS.md")
    finetune = stages["finetune"]
    assert finetune["rate_here"]["source"] == "a test figure"
    assert finetune["rate_reference_gpu"]["bound"] is True
    tokens = finetune["inputs"]["train_tokens_of_run"]
    assert tokens["basis"] in ("counted", "estimated") and tokens["value"] > 0
    assert finetune["seconds_here"]["value"] == pytest.approx(tokens["value"] / 100, abs=0.1)


def test_without_the_tokenizer_tokens_and_time_are_unknown(repo_root, sample_ingest, monkeypatch):
    from compara import plan
    from compara.plan import build_plan

    monkeypatch.setattr(plan, "_native_bf16", lambda: True)  # the sourced figure of that CPU
    monkeypatch.setattr(plan, "_probe_batch", lambda *a, **k: pytest.fail("the model is absent"))
    cfg = ci_config(repo_root, f"paths.data={sample_ingest}", "model.base=gemma3-270m")
    ft = by_stage(build_plan(cfg, device="cpu"))["finetune"]  # the test cache holds no Gemma
    assert ft["rate_here"]["value"] == 290.0  # sourced ...
    assert ft["inputs"]["train_tokens_of_run"]["basis"] == "unknown"  # ... but nothing to time
    assert "tokenizer" in ft["inputs"]["train_tokens_of_run"]["note"]
    assert ft["seconds_here"]["basis"] == "unknown"


def test_a_model_without_a_sourced_rate_has_unknown_time(repo_root, sample_ingest):
    from compara.plan import build_plan

    cfg = ci_config(repo_root, f"paths.data={sample_ingest}", "model.base=some/unlisted-model")
    ft = by_stage(build_plan(cfg, device="cpu"))["finetune"]
    assert ft["rate_here"]["value"] is None and ft["seconds_here"]["basis"] == "unknown"
    assert ft["seconds_reference_gpu"]["basis"] == "unknown"  # its size is unknown too


def test_the_plan_marks_a_run_over_max_hours(repo_root, sample_ingest, tiny_with_rate):
    from compara.plan import build_plan

    def over(hours: str) -> bool:
        cfg = ci_config(repo_root, f"paths.data={sample_ingest}", f"finetune.max_hours={hours}")
        return by_stage(build_plan(cfg, device="cpu", probe=False))["finetune"]["over_budget"]

    assert over("1e-9") and not over("1000")


def test_fit_token_budget_keeps_the_selection_order_prefix():
    from types import SimpleNamespace

    from finetune.data import fit_token_budget

    records = [{"task": "fact", "i": i} for i in range(6)] + [{"task": "reading", "i": 6}]
    examples = [SimpleNamespace(input_ids=[0] * n) for n in (10, 10, 50, 10, 10, 10, 40)]
    kept, report = fit_token_budget(records, examples, 60)
    # reading gets its share (1/7 of 60 = 8 tokens: too few for 40), the facts in order,
    # the 50-token record skipped because it does not fit after the first two
    assert kept == [0, 1, 3, 4, 5] and report["tokens_kept"] == 50
    kept, report = fit_token_budget(records, examples, 400)
    assert kept == list(range(7)) and report["records_kept"] == 7


@pytest.mark.usefixtures("one_torch_thread")
def test_finetune_refuses_a_run_over_max_hours(repo_root, fixtures_dir, tmp_path):
    from finetune.train import OverBudget, run_finetune

    cfg = ci_config(repo_root, *TINY_RUN, "finetune.max_hours=1e-9")
    out = tmp_path / "adapter"
    with pytest.raises(OverBudget) as err:
        run_finetune(cfg, fixtures_dir / "instructions.jsonl", out)
    message = str(err.value)
    assert "finetune.max_hours=1e-09" in message and "--force" in message
    assert "train tokens/s" in message and "max_train_tokens" in message
    assert not out.exists()  # refused before anything was written


@pytest.mark.usefixtures("one_torch_thread")
def test_force_trains_and_max_train_tokens_keeps_records_by_facts(repo_root, fixtures_dir,
                                                                   tmp_path):
    from finetune.train import run_finetune

    cfg = ci_config(repo_root, *TINY_RUN, "finetune.max_hours=1e-9",
                    "finetune.max_train_tokens=400")
    out = tmp_path / "adapter"
    summary = run_finetune(cfg, fixtures_dir / "instructions.jsonl", out, force=True)
    assert summary["plan"]["forced"] is True and summary["plan"]["hours"] > 1e-9
    budget = summary["data"]["selection"]["token_budget"]
    assert 0 < budget["records_kept"] < budget["records_before"]
    assert budget["tokens_kept"] <= 400 < budget["tokens_before"]
    assert summary["data"]["tokens"]["train"] == budget["tokens_kept"]
    trained = read_jsonl(out / "train_records.jsonl")
    assert len(trained) == budget["records_kept"]
    # kept in the order of fact coverage (finetune.select=facts), not the file's order
    from finetune.data import load_splits, select_records

    every, *_ = load_splits(fixtures_dir / "instructions.jsonl",
                            val_fraction=cfg.finetune.val_fraction)
    order = [r["id"] for r in select_records(every, None, "facts")[0]]
    assert order != [r["id"] for r in every]
    positions = [order.index(r["id"]) for r in trained]
    assert positions == sorted(positions)


def test_finetune_cli_refusal_is_one_clear_line(repo_root, fixtures_dir, tmp_path):
    from typer.testing import CliRunner

    from compara.cli import app

    args = ["finetune", "-c", str(repo_root / "configs" / "ci.yaml"),
            "--data", str(fixtures_dir / "instructions.jsonl"), "--out", str(tmp_path / "a")]
    for s in [*TINY_RUN, "finetune.max_hours=1e-9"]:
        args += ["-s", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert "error:" in res.output and "over the budget finetune.max_hours" in res.output


# -- the plan counts what the run will train on ------------------------------------------------

@pytest.mark.usefixtures("one_torch_thread")
def test_plan_tokens_are_those_finetune_trains_on(repo_root, sample_ingest, tiny_with_rate):
    """The instruction set is small: the plan makes the training set as `compara finetune` does
    (selection, tokenization, max_steps over the processes) instead of scaling a mean."""
    from compara.plan import build_plan
    from finetune.rate import train_tokens_of_run
    from finetune.train import counting_tokenizer, prepare_data

    cfg = ci_config(repo_root, f"paths.data={sample_ingest}", "finetune.select=facts")
    tokenized = prepare_data(cfg, sample_ingest, counting_tokenizer(cfg.model))
    for world in (1, 4):
        ft = by_stage(build_plan(cfg, device="cpu", world_size=world, probe=False))["finetune"]
        run = ft["inputs"]["train_tokens_of_run"]
        assert run["value"] == train_tokens_of_run(cfg.finetune, tokenized.train.lengths, world)
        assert ft["inputs"]["train_tokens_per_epoch"] == {
            "value": sum(tokenized.train.lengths), "basis": "counted",
            "note": ft["inputs"]["train_tokens_per_epoch"]["note"]}
    one = by_stage(build_plan(cfg, device="cpu", probe=False))["finetune"]
    four = by_stage(build_plan(cfg, device="cpu", world_size=4, probe=False))["finetune"]
    # max_steps on 4 processes: 4 times the examples of one (ci.yaml sets max_steps)
    assert four["inputs"]["train_tokens_of_run"]["value"] == pytest.approx(
        4 * one["inputs"]["train_tokens_of_run"]["value"], abs=4)


@pytest.mark.usefixtures("one_torch_thread")
def test_plan_probes_the_training_rate_here(repo_root, sample_ingest, tiny_with_rate):
    from compara.plan import build_plan

    cfg = ci_config(repo_root, f"paths.data={sample_ingest}", "model.quantize=none")
    ft = by_stage(build_plan(cfg, device="cpu", probe=True))["finetune"]
    rate = ft["rate_here"]
    assert rate["source"].startswith("probe here") and rate["value"] > 0
    tokens = ft["inputs"]["train_tokens_of_run"]["value"]
    assert ft["seconds_here"]["value"] == pytest.approx(tokens / rate["value"], rel=0.01, abs=0.1)
    sourced = by_stage(build_plan(cfg, device="cpu", probe=False))["finetune"]["rate_here"]
    assert sourced["source"] == "a test figure"


def test_plan_follows_ingest_select(repo_root, sample_dump, sample_ingest, tmp_path):
    from compara.plan import build_plan

    titles = tmp_path / "titulos.txt"
    titles.write_text("Lisboa\nPorto\nBrasil\n", encoding="utf-8")
    everything = by_stage(build_plan(ci_config(repo_root, f"paths.data={tmp_path / 'none'}",
                                               f"paths.index={tmp_path / 'none'}"),
                                     sample_pages=20, device="cpu", probe=False))
    cfg = ci_config(repo_root, f"paths.data={sample_ingest}", f"paths.index={tmp_path / 'none'}",
                    f"ingest.select.titles={titles}")
    plan = build_plan(cfg, sample_pages=20, device="cpu", probe=False)
    # the ingest outputs there were made without a selection: not counted as this run's
    assert any("another ingest.select" in note for note in plan["notes"])
    selected = by_stage(plan)
    articles = selected["ingest"]["inputs"]["articles"]
    assert articles["basis"] == "estimated" and 0 < articles["value"] <= 3
    assert "titles ≤ 3" in articles["note"]
    assert selected["ingest"]["inputs"]["articles_in_dump"]["value"] > 3
    for stage, key in (("index", "chunks"), ("finetune", "instruction_records")):
        assert selected[stage]["inputs"][key]["basis"] == "estimated"
        assert 0 < selected[stage]["inputs"][key]["value"] < everything[stage]["inputs"][key]["value"]
    # every page is still read: the ingest's time is the whole dump's
    assert selected["ingest"]["inputs"]["pages"] == everything["ingest"]["inputs"]["pages"]


def test_plan_counts_a_selected_ingest(repo_root, sample_dump, tmp_path):
    from compara.plan import build_plan
    from ingest.pipeline import run_ingest

    titles = tmp_path / "titulos.txt"
    titles.write_text("Lisboa\nPorto\n", encoding="utf-8")
    cfg = ci_config(repo_root, f"paths.data={tmp_path / 'out'}", f"paths.index={tmp_path / 'none'}",
                    f"ingest.select.titles={titles}")
    report = run_ingest(sample_dump, tmp_path / "out", cfg.ingest)
    ingest = by_stage(build_plan(cfg, device="cpu", probe=False))["ingest"]["inputs"]
    assert ingest["articles"]["basis"] == "counted"
    assert ingest["articles"]["value"] == report["articles"] == report["selection"]["total"]
    assert ingest["articles_in_dump"]["value"] == report["selection"]["articles_in_dump"]


def test_a_compressed_dump_is_read_by_its_bytes_not_its_name(repo_root, sample_dump, tmp_path):
    """The plan opens a dump as the ingest does (ingest.dump.open_dump: the magic bytes)."""
    from compara.plan import build_plan

    disguised = tmp_path / "dump.xml"  # bz2 bytes under an .xml name
    disguised.write_bytes(bz2.compress(sample_dump.read_bytes()))
    cfg = ci_config(repo_root, f"paths.dump={disguised}", f"paths.data={tmp_path / 'none'}")
    pages = by_stage(build_plan(cfg, sample_pages=10_000, device="cpu",
                                probe=False))["ingest"]["inputs"]["pages"]
    assert pages["value"] == sample_dump.read_text(encoding="utf-8").count("<page>")


def test_a_large_articles_file_is_chunked_from_a_sample(repo_root, sample_ingest, monkeypatch,
                                                        tmp_path):
    from compara import plan as plan_mod

    cfg = ci_config(repo_root, f"paths.data={sample_ingest}", f"paths.index={tmp_path / 'none'}")
    whole = by_stage(plan_mod.build_plan(cfg, device="cpu", probe=False))["index"]["inputs"]
    size = (sample_ingest / "articles.jsonl").stat().st_size
    monkeypatch.setattr(plan_mod, "CHUNK_SAMPLE_BYTES", size // 2)
    part = by_stage(plan_mod.build_plan(cfg, device="cpu", probe=False))["index"]["inputs"]
    assert whole["chunks"]["basis"] == "counted"
    assert part["chunks"]["basis"] == "estimated" and "first" in part["chunks"]["note"]
    assert 0.5 * whole["chunks"]["value"] < part["chunks"]["value"] < 2 * whole["chunks"]["value"]


def test_finetune_refuses_before_loading_the_model(repo_root, fixtures_dir, tmp_path,
                                                   tiny_with_rate, monkeypatch):
    """With a sourced rate a run over budget is refused from the tokenized data alone: the
    base model's weights are never loaded."""
    import core.models
    from finetune.train import OverBudget, run_finetune

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the budget was checked")

    monkeypatch.setattr(core.models, "load_base", no_load)
    cfg = ci_config(repo_root, *TINY_RUN, "finetune.max_hours=1e-9")
    with pytest.raises(OverBudget, match="a test figure"):
        run_finetune(cfg, fixtures_dir / "instructions.jsonl", tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


def test_pages_are_counted_beyond_the_ingested_sample(repo_root, sample_dump, tmp_path):
    """A few pages are ingested, but pages are counted over many more of the dump's bytes (a
    compressed reader runs a block ahead of a small sample); here that reaches the end."""
    from compara.plan import build_plan

    dump = tmp_path / "amostra.xml.bz2"
    dump.write_bytes(bz2.compress(sample_dump.read_bytes()))
    cfg = ci_config(repo_root, f"paths.dump={dump}", f"paths.data={tmp_path / 'none'}")
    ingest = by_stage(build_plan(cfg, sample_pages=20, device="cpu", probe=False))["ingest"]
    total = sample_dump.read_text(encoding="utf-8").count("<page>")
    assert ingest["inputs"]["pages"] == {"value": total, "basis": "counted",
                                         "note": "pages counted in the whole dump"}
    articles = ingest["inputs"]["articles"]
    assert articles["basis"] == "estimated" and "first 20 pages" in articles["note"]
    assert total / 3 < articles["value"] <= total


def test_plan_names_the_faiss_index_the_build_will_choose(repo_root, sample_ingest, tmp_path):
    from compara.plan import build_plan

    def index(*overrides: str) -> dict:
        cfg = ci_config(repo_root, f"paths.data={sample_ingest}",
                        f"paths.index={tmp_path / 'none'}", *overrides)
        return by_stage(build_plan(cfg, device="cpu", probe=False))["index"]

    small = index()
    chunks = small["inputs"]["chunks"]["value"]
    assert small["faiss_index"]["type"] == "flat"
    assert small["faiss_index"]["bytes"]["value"] == chunks * 384 * 4
    compressed = index("index.auto_exact_below=1", "index.auto_compressed_from=2")
    assert compressed["faiss_index"]["type"] == "ivfpq"
    assert compressed["faiss_index"]["bytes"]["value"] < small["faiss_index"]["bytes"]["value"] / 10


@pytest.mark.parametrize("native", [True, False])
def test_the_batch_rate_follows_this_cpus_probed_speed(repo_root, monkeypatch, native):
    """The sourced answers/s was measured on one CPU, with native bf16 or as an AVX2-only one
    (fp32); a probed training rate here at half that CPU's sourced training rate of the same
    precision halves it (and says so); a sourced one leaves it."""
    from compara import plan
    from compara.plan import BATCH_CPU, BATCH_CPU_FP32, _batch_stage
    from finetune.rate import FINETUNE_CPU, FINETUNE_CPU_FP32, PROBED, finetune_rate

    monkeypatch.setattr(plan, "_native_bf16", lambda: native)
    cfg = load_config(repo_root / "configs" / "sample.yaml")
    sourced = (BATCH_CPU if native else BATCH_CPU_FP32)["gemma3-270m"].value
    training = (FINETUNE_CPU if native else FINETUNE_CPU_FP32)["gemma3-270m"]
    assert finetune_rate(cfg.model, "cpu", bf16_native=native) == training
    half = training.value / 2
    plain = _batch_stage(cfg, "cpu", training.to_dict())
    probed = _batch_stage(cfg, "cpu", {"value": half, "source": f"{PROBED}: 2 steps"})
    assert plain["rate_here"]["value"] == sourced
    assert probed["rate_here"]["value"] == pytest.approx(sourced / 2, rel=1e-2)
    assert "x0.50" in probed["rate_here"]["source"]
    assert probed["seconds_here"]["value"] == pytest.approx(
        2 * plain["seconds_here"]["value"], rel=1e-2)
    assert _batch_stage(cfg, "cuda", {"value": half, "source": PROBED})["rate_here"] is None


def test_the_batch_is_planned_from_answers_measured_here(repo_root, sample_ingest, tiny_with_rate,
                                                         tmp_path):
    """The answering probe puts one batch of questions through an arm of each kind that can
    answer now (here no index: the plain arm only), in a temporary runs folder; the batch
    stage then takes every arm at its kind's seconds an answer, and falls back to the sourced
    figure when a kind the config has was not measured."""
    from compara import plan
    from compara.arms import experiment_arms

    runs = tmp_path / "runs"
    cfg = ci_config(repo_root, f"paths.data={sample_ingest}", f"paths.index={tmp_path / 'none'}",
                    f"paths.runs={runs}", "model.quantize=none")
    probed = plan._probe_batch(cfg)
    assert probed is not None and probed["arms"] == {"plain": "base"}
    assert probed["questions"] == max(4, cfg.generation.batch_size)
    assert probed["seconds_per_answer"]["plain"] > 0
    assert not runs.exists()  # nothing written into the experiment's runs (nor its cache)

    kinds = ["retrieval" if arm.retrieval is not None else "plain" for arm in experiment_arms(cfg)]
    assert "retrieval" in kinds
    fallback = plan._batch_stage(cfg, "cpu", None, probed)["rate_here"]
    assert fallback is None or not fallback["source"].startswith("probe here")

    both = {"questions": 12, "arms": {"plain": "base", "retrieval": "rag"},
            "seconds_per_answer": {"plain": 1.0, "retrieval": 3.0}}
    stage = plan._batch_stage(cfg, "cpu", None, both)
    per_arm = stage["inputs"]["answers"]["value"] / len(kinds)
    assert stage["seconds_here"]["value"] == pytest.approx(
        sum(per_arm * (3.0 if k == "retrieval" else 1.0) for k in kinds), rel=1e-2)
    assert stage["rate_here"]["source"].startswith("probe here")
    assert "base (plain: 1.00 s an answer)" in stage["rate_here"]["source"]

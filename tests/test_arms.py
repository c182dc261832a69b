"""Arms as data: the config's `arms:` list, what each arm needs, and how they are selected and
paired; then five arms and two adapters over one tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compara.arms import (
    DEFAULT_ARMS,
    ArmConfig,
    ArmUnavailable,
    arm_order,
    arm_pairs,
    default_arm_configs,
    resolve_arms,
    select,
)
from compara.config import ExperimentConfig, load_config
from core.configbase import ConfigError
from rag.config import RetrievalConfig

FIVE = [*(a.to_dict() for a in default_arm_configs()),
        {"name": "rag-dense", "retrieval": {"retriever": "dense"}}]


def test_the_default_arms_are_the_four_of_the_study_with_their_old_names():
    cfg = ExperimentConfig()
    assert [a.name for a in cfg.arms] == list(DEFAULT_ARMS) == [
        "base", "rag", "finetuned", "finetuned+rag"]
    arms = resolve_arms(cfg.arms, "/x/adapter", RetrievalConfig())
    needs = {a.name: (a.needs_adapter, a.needs_index) for a in arms}
    assert needs == {"base": (False, False), "rag": (False, True), "finetuned": (True, False),
                     "finetuned+rag": (True, True)}
    assert arms[2].adapter == "/x/adapter"


def test_an_arm_changes_some_retrieval_settings_and_keeps_the_rest():
    base = RetrievalConfig(retriever="hybrid", k=4, fetch_k=30)
    (arm,) = resolve_arms([ArmConfig(name="rag-dense", retrieval={"retriever": "dense", "k": 8})],
                          None, base)
    assert (arm.retrieval.retriever, arm.retrieval.k, arm.retrieval.fetch_k) == ("dense", 8, 30)
    # an experiment-wide change (the app's sidebar) keeps the arm's own changes
    other = arm.with_retrieval(base.replace(k=2, fetch_k=7))
    assert (other.retrieval.retriever, other.retrieval.k, other.retrieval.fetch_k) == ("dense", 8, 7)
    # the identity holds what always was (retriever, k) and whatever else the arm changes
    (wide,) = resolve_arms([ArmConfig(name="wide", retrieval={"fetch_k": 90})], None, base)
    assert wide.retrieval_identity() == {"retriever": "hybrid", "k": 4, "fetch_k": 90}
    (plain,) = resolve_arms([ArmConfig(name="rag", retrieval=True)], None, base)
    assert plain.retrieval_identity() == {"retriever": "hybrid", "k": 4}


@pytest.mark.parametrize("arms, message", [
    ([{"name": "base"}, {"name": "base"}], "used twice"),
    ([], "empty"),
    ([{"name": "a,b"}], "letters, digits"),
    ([{"name": "x", "retrieval": {"retriever": "colbert"}}], "arms: x: retrieval"),
    ([{"name": "x", "retrieval": {"kk": 3}}], "unknown setting"),
    ([{"name": "x", "label": {"fr": "X"}}], "label languages fr"),
    ([{"name": "x", "colour": "red"}], "unknown setting"),
])
def test_a_bad_arm_list_is_refused_at_load_with_the_arm_named(tmp_path, arms, message):
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps({"arms": arms}), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_adapter_folders_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "cfgs").mkdir()
    path = tmp_path / "cfgs" / "exp.yaml"
    path.write_text(json.dumps({"paths": {"adapter": "../adapters/main"},
                                "arms": [{"name": "base"},
                                         {"name": "ft", "adapter": True},
                                         {"name": "r64", "adapter": "../adapters/r64"}]}),
                    encoding="utf-8")
    cfg = load_config(path)
    from compara.arms import experiment_arms

    arms = {a.name: a for a in experiment_arms(cfg)}
    assert Path(arms["ft"].adapter) == (tmp_path / "adapters" / "main").resolve()
    assert Path(arms["r64"].adapter) == (tmp_path / "adapters" / "r64").resolve()
    assert arms["base"].adapter is None


def test_select_by_name_keeps_the_order_named_and_refuses_an_unknown_one():
    arms = resolve_arms([ArmConfig.from_dict(a) for a in FIVE], "/a", RetrievalConfig())
    assert [a.name for a in select(arms, None)] == [a["name"] for a in FIVE]
    assert [a.name for a in select(arms, ["rag-dense", "base", "base"])] == ["rag-dense", "base"]
    with pytest.raises(ArmUnavailable, match="unknown arm.*rerank.*base, rag, finetuned"):
        select(arms, ["rerank"])


def test_pairs_are_every_pair_or_the_ones_named():
    four = list(DEFAULT_ARMS)
    pairs = arm_pairs(four)
    assert len(pairs) == 6 and len(set(pairs)) == 6
    # each later arm minus each earlier one: the arms with more added come first
    assert ("rag", "base") in pairs and ("finetuned+rag", "rag") in pairs
    assert ("finetuned", "rag") in pairs and ("base", "rag") not in pairs
    named = arm_pairs(four + ["rag-dense"], [["rag-dense", "rag"], ["rag-dense", "absent"]])
    assert named == [("rag-dense", "rag")]
    assert arm_order(["z", "rag", "base", "a"]) == ["base", "rag", "a", "z"]
    assert arm_order(["z", "rag"], ["z", "rag"]) == ["z", "rag"]


def test_eval_pairs_must_name_arms_of_the_experiment(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps({"eval": {"pairs": [["rag", "nope"]]}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="nope"):
        load_config(path)


def test_a_record_says_whether_its_arm_retrieved_in_any_version():
    from core.metrics import retrieved

    assert retrieved({"arm": "x", "passages": [{"text": "a"}]})
    assert retrieved({"arm": "rag", "passages": [], "identity": {"index": "abc"}})
    assert not retrieved({"arm": "finetuned", "passages": [], "identity": {"index": None}})
    assert not retrieved({"arm": "rag", "identity": "broken"})


# -- on the tiny model ----------------------------------------------------------------------

def _tiny(quantize: str = "none"):
    from core.config import ModelConfig
    from core.models import load_base

    return load_base(ModelConfig(base="tiny-random-llama", quantize=quantize, dtype="float32"))


def make_adapter(folder: Path, seed: int, rank: int, quantize: str = "none") -> Path:
    """A compara adapter folder with random (non-zero) LoRA weights on the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from core.prompts import PromptTemplate

    fresh = _tiny(quantize)
    torch.manual_seed(seed)
    peft = get_peft_model(fresh.model, LoraConfig(r=rank, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft.save_pretrained(folder)
    template = PromptTemplate.load()
    template.save(folder)
    summary = {"base": {"base": fresh.info.base, "fingerprint": fresh.info.fingerprint,
                        "tokenizer": fresh.info.tokenizer, "quantize": quantize},
               "template": {"fingerprint": template.fingerprint}}
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return make_adapter(root / "r4", seed=1, rank=4), make_adapter(root / "r8", seed=2, rank=8)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, fixtures_dir):
    from rag.config import IndexConfig
    from rag.embedders import HashEmbeddings
    from rag.store import build_index

    out = tmp_path_factory.mktemp("arms-index") / "idx"
    build_index(fixtures_dir / "articles.jsonl", out, IndexConfig(), embedder=HashEmbeddings())
    return out


def _experiment(tmp_path, adapter, arms, index_dir=None, quantize="none", **paths):
    from core.config import GenerationConfig, ModelConfig

    cfg = ExperimentConfig(arms=[ArmConfig.from_dict(a) for a in arms])
    cfg.model = ModelConfig(base="tiny-random-llama", quantize=quantize, dtype="float32")
    cfg.paths = cfg.paths.replace(adapter=str(adapter), runs=str(tmp_path / "runs"),
                                  index=str(index_dir) if index_dir else None, **paths)
    cfg.generation = GenerationConfig(max_new_tokens=6, batch_size=2)
    cfg.eval = cfg.eval.replace(bootstrap_resamples=20)
    cfg.retrieval = RetrievalConfig(k=2, fetch_k=10)
    return cfg


QS = ["Onde nasce o Rio Verde-Claro?", "Qual é o gentílico de Vila Serena?",
      "Quem fundou a cidade?"]


def test_two_adapters_share_the_base_weights_and_each_arm_answers_as_its_adapter_alone(
        tmp_path, adapters):
    from compara.comparison import build_comparison, score_arm
    from core.questions import Question

    a, b = adapters
    arms = [{"name": "base"}, {"name": "finetuned", "adapter": True},
            {"name": "r8", "adapter": str(b), "label": {"pt": "Ajustado r8"}}]
    both = build_comparison(_experiment(tmp_path, a, arms))
    assert both.arms == ["base", "finetuned", "r8"]
    model = both.loaded.model
    # one copy of the base weights: every parameter is the base's or one adapter's LoRA
    lora = {name: sum(p.numel() for n, p in model.named_parameters() if f".{name}." in n)
            for name in both.loaded.adapters}
    assert set(lora) == {"default", "adapter1"} and lora["adapter1"] == 2 * lora["default"]
    total = sum(p.numel() for p in model.parameters())
    assert total == both.loaded.info.parameters + sum(lora.values())
    ptrs = {p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n}
    assert len(ptrs) == len([n for n, _ in model.named_parameters() if "lora_" not in n])

    def alone(adapter):
        return build_comparison(_experiment(tmp_path, adapter, arms[:2]))

    got = {arm: [x.text for x in both.answer(arm, QS)] for arm in ("r8", "finetuned", "base")}
    assert got["finetuned"] == [x.text for x in alone(a).answer("finetuned", QS)]
    assert got["r8"] == [x.text for x in alone(b).answer("finetuned", QS)]
    assert got["base"] == [x.text for x in alone(b).answer("base", QS)]
    # the two adapters are different models: the same reference is scored differently
    qs = [Question(id=str(i), question=q, reference=["Serra do Lajeado"]) for i, q in enumerate(QS)]
    lp = {arm: [s.reference_logprob for s in score_arm(both, arm, qs)] for arm in ("finetuned", "r8")}
    assert lp["finetuned"] != pytest.approx(lp["r8"], abs=1e-4)
    # each arm's identity names its own adapter
    ids = {arm: both.identity(arm)["adapter"] for arm in both.arms}
    assert ids["base"] is None and ids["finetuned"] and ids["r8"] and ids["finetuned"] != ids["r8"]
    assert both.arm("r8").title("pt") == "Ajustado r8" and both.arm("r8").title("en") == "Ajustado r8"
    assert both.arm("finetuned").title("en") == "Fine-tuned (QLoRA)"
    # a label in one language only: the other falls back to the usual label, else to it
    (rag, other) = resolve_arms([ArmConfig(name="rag", retrieval=True, label={"en": "Search"}),
                                 ArmConfig(name="x", label={"en": "Ex"})], None, RetrievalConfig())
    assert (rag.title("en"), rag.title("pt")) == ("Search", "Base + RAG")
    assert (other.title("pt"), other.title("en")) == ("Ex", "Ex")


@pytest.mark.parametrize("unpack", [True, False])
def test_two_adapters_on_a_4bit_base_as_qlora_trains_them(tmp_path, unpack):
    """The default path: a 4-bit base (unpacked once for answering on a CPU, or kept packed)
    with two adapters beside each other; each arm answers as its adapter alone."""
    from compara.comparison import build_comparison

    root = tmp_path / "ad"
    a = make_adapter(root / "a", seed=3, rank=4, quantize="4bit")
    b = make_adapter(root / "b", seed=4, rank=8, quantize="4bit")
    arms = [{"name": "base"}, {"name": "finetuned", "adapter": True},
            {"name": "b", "adapter": str(b)}]

    def build(adapter, names):
        cfg = _experiment(tmp_path, adapter, [x for x in arms if x["name"] in names],
                          quantize="4bit")
        cfg.model = cfg.model.replace(unpack_4bit_on_cpu=unpack)
        return build_comparison(cfg)

    both = build(a, ("base", "finetuned", "b"))
    assert both.arms == ["base", "finetuned", "b"]
    assert both.loaded.info.unpacked_on_cpu is unpack
    assert both.identity("b").get("unpacked", False) is unpack
    texts = {arm: [x.text for x in both.answer(arm, QS)] for arm in both.arms}
    assert texts["finetuned"] == [x.text for x in build(a, ("finetuned",)).answer("finetuned", QS)]
    assert texts["b"] == [x.text for x in build(b, ("finetuned",)).answer("finetuned", QS)]
    assert texts["base"] == [x.text for x in build(b, ("base",)).answer("base", QS)]


def test_five_arms_in_results_and_report_with_every_pair(tmp_path, adapters, index_dir,
                                                        fixtures_dir, sample_ingest):
    from compara.batch import run_batch
    from core.io import read_jsonl

    a, _ = adapters
    cfg = _experiment(tmp_path, a, FIVE, index_dir, data=str(sample_ingest))
    cfg.index = cfg.index.replace()  # the index's own embedder is given below
    from compara.arms import experiment_arms
    from compara.comparison import Comparison
    from core.models import attach_adapter
    from core.prompts import PromptTemplate, RagTemplate
    from rag.config import IndexConfig
    from rag.embedders import HashEmbeddings
    from rag.retrieve import load_index

    loaded = attach_adapter(_tiny(), a)
    index = load_index(index_dir, IndexConfig(), cfg.retrieval, embedder=HashEmbeddings())
    comparison = Comparison(loaded, cfg.generation, PromptTemplate.load(), RagTemplate.load(),
                            index, cfg.retrieval, index_dir=str(index_dir),
                            arms=experiment_arms(cfg))
    assert comparison.arms == [x["name"] for x in FIVE]
    out = tmp_path / "run5"
    summary = run_batch(cfg, fixtures_dir / "questions.jsonl", out, comparison=comparison)
    records = read_jsonl(out / "results.jsonl")
    names = [x["name"] for x in FIVE]
    assert {r["arm"] for r in records} == set(names) and len(records) == 5 * 5
    assert summary["arms"] == names  # the config's order
    dense = [r for r in records if r["arm"] == "rag-dense"]
    assert all(p["retriever"] == "dense" for r in dense for p in r["passages"])
    assert all(r["identity"]["retrieval"] == {"retriever": "dense", "k": 2} for r in dense)
    assert all(r["metrics"]["support"] is not None or not r.get("reference") for r in dense)
    pairs = {(p["a"], p["b"]) for p in summary["paired"] if p["metric"] == "contains"}
    assert len(pairs) == 10 and ("rag-dense", "rag") in pairs
    run = json.loads((out / "run.json").read_text())
    assert run["arms"] == names and set(run["identity"]) == set(names)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert all(name in html for name in names)
    # named pairs only, when the config names them (compara report re-reads the folder)
    from compara.report import write_report

    again = write_report(out, cfg=cfg.eval.replace(pairs=[["rag-dense", "rag"]]))
    assert {(p["a"], p["b"]) for p in again["paired"]} == {("rag-dense", "rag")}


def test_a_run_folder_of_an_earlier_version_still_reports_with_every_pair(tmp_path):
    from test_report import make_records

    from compara.config import EvalConfig
    from compara.report import write_report
    from core.io import write_jsonl

    write_jsonl(tmp_path / "results.jsonl", make_records())
    # run.json of a version without `arms:` in its config: the arms in their usual order
    (tmp_path / "run.json").write_text(json.dumps({"arms": ["base", "rag", "finetuned",
                                                            "finetuned+rag"]}))
    summary = write_report(tmp_path, cfg=EvalConfig(bootstrap_resamples=20))
    assert summary["arms"] == list(DEFAULT_ARMS)
    assert {(p["a"], p["b"]) for p in summary["paired"]} == set(arm_pairs(DEFAULT_ARMS))
    # support and retrieval hit for the arms whose records name an index, as before
    assert summary["per_arm"]["rag"]["metrics"]["support"]["mean"] == pytest.approx(0.5)
    assert summary["per_arm"]["finetuned"]["metrics"]["support"]["mean"] is None


def test_the_default_arms_keep_the_identity_fields_of_earlier_versions(tmp_path, adapters,
                                                                       index_dir):
    """Answers cached and votes given by earlier versions stay valid: the same fields, so the
    same cache keys (checked against the previous release when this was written)."""
    from compara.comparison import Comparison
    from core.config import GenerationConfig
    from core.models import attach_adapter
    from core.prompts import RagTemplate
    from rag.config import IndexConfig
    from rag.embedders import HashEmbeddings
    from rag.retrieve import load_index

    loaded = attach_adapter(_tiny(), adapters[0])
    index = load_index(index_dir, IndexConfig(), RetrievalConfig(k=2), embedder=HashEmbeddings())
    c = Comparison(loaded, GenerationConfig(max_new_tokens=6), loaded.adapter.template,
                   RagTemplate.load(), index, RetrievalConfig(k=2), index_dir=str(index_dir))
    plain = {"arm", "base_model", "fingerprint", "quantize", "dtype", "decoding", "template",
             "adapter", "index"}
    for arm in DEFAULT_ARMS:
        ident = c.identity(arm)
        extra = {"retrieval", "rag_template"} if "rag" in arm else set()
        assert set(ident) == plain | extra, arm
        assert (ident["adapter"] is not None) == arm.startswith("finetuned")
        assert (ident["index"] is not None) == ("rag" in arm)
        if "rag" in arm:
            assert ident["retrieval"] == {"retriever": "hybrid", "k": 2}
    assert len({c.cache_key(a, "P") for a in DEFAULT_ARMS}) == 4


def test_compara_ask_gives_the_batch_record_through_the_same_cache(repo_root, tmp_path):
    from typer.testing import CliRunner

    from compara.cli import app

    def ask(*extra):
        return CliRunner().invoke(app, [
            "-q", "ask", "Onde nasce o Rio Verde-Claro?", "-r", "Serra do Lajeado | Lajeado",
            "--arms", "base", "--json", "-c", str(repo_root / "configs" / "ci.yaml"),
            "-s", "model.quantize=none", "-s", "generation.max_new_tokens=4",
            "-s", f"paths.runs={tmp_path}", *extra])

    first = ask()
    assert first.exit_code == 0, first.output
    (record,) = json.loads(first.stdout)
    assert record["arm"] == "base" and record["reference"] == ["Serra do Lajeado", "Lajeado"]
    assert record["key"] and record["cached"] is False
    assert {"contains", "f1", "ref_logprob"} <= set(record["metrics"])
    again = ask()
    (cached,) = json.loads(again.stdout)
    assert cached["cached"] is True and cached["key"] == record["key"]
    assert cached["answer"] == record["answer"] and cached["metrics"] == record["metrics"]
    unknown = ask("--arms", "rerank")
    assert unknown.exit_code == 2 and "unknown arm(s) rerank" in unknown.output
    assert "Traceback" not in unknown.output


def test_an_arm_of_another_retrieval_kind_is_one_config_entry(tmp_path, index_dir):
    """`{retriever: mmr}`: a retriever the index knows, chosen by an arm alone; its identity
    holds the setting it changes, so its answers are cached apart."""
    from compara.comparison import Comparison
    from core.config import GenerationConfig
    from core.prompts import PromptTemplate, RagTemplate
    from rag.config import IndexConfig
    from rag.embedders import HashEmbeddings
    from rag.retrieve import load_index

    base = RetrievalConfig(k=3, fetch_k=20)
    arms = resolve_arms([ArmConfig(name="rag", retrieval=True),
                         ArmConfig(name="rag-mmr", retrieval={"retriever": "mmr",
                                                              "mmr_lambda": 0.3})], None, base)
    index = load_index(index_dir, IndexConfig(), base, embedder=HashEmbeddings())
    c = Comparison(_tiny(), GenerationConfig(max_new_tokens=2), PromptTemplate.load(),
                   RagTemplate.load(), index, base, index_dir=str(index_dir), arms=arms)
    q = "Onde nasce o Rio Verde-Claro?"
    plain, mmr = c.prepare("rag", q), c.prepare("rag-mmr", q)
    assert {p["retriever"] for p in plain.passages} == {"hybrid"}
    assert {p["retriever"] for p in mmr.passages} == {"mmr"} and len(mmr.passages) == 3
    assert c.identity("rag-mmr")["retrieval"] == {"retriever": "mmr", "k": 3, "mmr_lambda": 0.3}
    assert c.cache_key("rag", "P") != c.cache_key("rag-mmr", "P")


def test_compara_arms_says_what_each_arm_needs_without_loading_a_model(repo_root, tmp_path,
                                                                        adapters, index_dir):
    from typer.testing import CliRunner

    from compara.cli import app

    listed = [{"name": "base"}, {"name": "ft", "adapter": True},
              {"name": "r8", "adapter": str(adapters[1])},
              {"name": "rag-mmr", "retrieval": {"retriever": "mmr"}, "label": {"pt": "Diverso"}}]
    arms = f"arms={json.dumps(listed)}"  # YAML reads JSON
    result = CliRunner().invoke(app, ["arms", "--json", "-c", str(repo_root / "configs/ci.yaml"),
                                      "-s", arms, "-s", f"paths.adapter={tmp_path / 'none'}",
                                      "-s", f"paths.index={index_dir}"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert list(rows) == ["base", "ft", "r8", "rag-mmr"]
    assert rows["base"]["ready"] and rows["r8"]["ready"] and rows["rag-mmr"]["ready"]
    assert not rows["ft"]["ready"] and "compara finetune" in rows["ft"]["missing"][0]
    assert rows["rag-mmr"]["retrieval"]["retriever"] == "mmr"
    assert rows["rag-mmr"]["label"] == "Diverso"
    assert "torch" not in result.stdout  # nothing was loaded to say it

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

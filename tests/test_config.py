from pathlib import Path

import pytest

from compara.config import ExperimentConfig, load_config
from core.configbase import ConfigError, parse_override


def test_shipped_configs_load_and_resolve_paths_relative_to_the_file(repo_root):
    for name in ("sample.yaml", "ci.yaml"):
        cfg = load_config(repo_root / "configs" / name)
        assert Path(cfg.paths.dump) == repo_root / "data/sample/ptwiki-amostra-pages-articles.xml"
        assert Path(cfg.paths.dump).is_absolute()
        assert cfg.source == str(repo_root / "configs" / name)


def test_overrides_are_typed_and_nested(repo_root):
    cfg = load_config(repo_root / "configs/sample.yaml",
                      ["ingest.workers=2", "finetune.lr=1e-4", "ingest.instructions.tasks=definition,infobox"])
    assert cfg.ingest.workers == 2
    assert cfg.finetune.lr == pytest.approx(1e-4)
    assert cfg.ingest.instructions.tasks == ["definition", "infobox"]


def test_unknown_key_is_refused_with_the_valid_keys(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("ingest:\n  wokers: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "ingest.wokers" in str(err.value) and "workers" in str(err.value)
    assert str(path) in str(err.value)


def test_bad_type_and_range_are_refused(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("ingest:\n  workers: many\n")
    with pytest.raises(ConfigError, match="ingest.workers"):
        load_config(path)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(None, ["ingest.instructions.val_fraction=1.5"])


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("ingest:\n  workers: [1, 2\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(path)


def test_override_syntax():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=x=y") == ("a", "x=y")
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_every_field_is_documented():
    rows = ExperimentConfig.describe()
    assert len(rows) > 20
    undocumented = [name for name, help_text, _ in rows if not help_text]
    assert not undocumented


def test_every_file_named_in_a_config_is_relative_to_the_config_file(tmp_path):
    """paths, arms' adapters and ingest.select's files: read the same by every command
    (`compara demo` and `compara plan` ingest too, not only `compara ingest`)."""
    import json

    from compara.config import load_config

    (tmp_path / "cfgs").mkdir()
    path = tmp_path / "cfgs" / "exp.yaml"
    path.write_text(json.dumps({
        "paths": {"data": "../data"},
        "ingest": {"select": {"titles": "titulos.txt", "questions": "../q/perguntas.jsonl"}},
        "arms": [{"name": "base"}, {"name": "r8", "adapter": "../ad/r8"}]}), encoding="utf-8")
    cfg = load_config(path)
    assert cfg.ingest.select.titles == str((tmp_path / "cfgs" / "titulos.txt").resolve())
    assert cfg.ingest.select.questions == str((tmp_path / "q" / "perguntas.jsonl").resolve())
    assert cfg.paths.data == str((tmp_path / "data").resolve())
    assert cfg.arms[1].adapter == str((tmp_path / "ad" / "r8").resolve())

"""The command line's own output off a terminal: never wrapped at a guessed width."""

from __future__ import annotations

import logging

import pytest


def test_error_not_wrapped_off_a_terminal(tmp_path, monkeypatch, capsys):
    import typer

    from compara.cli.utils import fail

    monkeypatch.setenv("COLUMNS", "40")
    deep = tmp_path.joinpath(*["pasta-com-nome-comprido"] * 6) / "none.jsonl"
    with pytest.raises(typer.Exit):
        fail(f"{deep}: no such file or folder")
    err = capsys.readouterr().err
    assert f"{deep}: no such file or folder" in err
    assert len(err.strip().splitlines()) == 1


def test_log_lines_not_wrapped_off_a_terminal(tmp_path, monkeypatch, capsys):
    from core.logs import setup_logging

    monkeypatch.setenv("COLUMNS", "40")
    message = "kept as " + str(tmp_path.joinpath(*["outra-pasta-comprida"] * 6))
    setup_logging()
    try:
        logging.getLogger("compara.test").warning(message)
        assert message in capsys.readouterr().err
    finally:
        logging.getLogger().handlers.clear()


def test_cli_error_whole_in_a_narrow_runner(tmp_path, repo_root, monkeypatch):
    from typer.testing import CliRunner

    from compara.cli import app

    monkeypatch.setenv("COLUMNS", "40")
    missing = tmp_path.joinpath(*["um-nome-de-pasta-longo"] * 5) / "none.jsonl"
    res = CliRunner().invoke(app, ["finetune", "-c", str(repo_root / "configs" / "ci.yaml"),
                                   "--data", str(missing), "--out", str(tmp_path / "a")])
    assert res.exit_code == 2
    assert f"{missing}: no such file" in res.output


def test_library_warnings_and_bars_stay_out_unless_verbose(monkeypatch, capsys):
    import os
    import warnings

    from core.logs import setup_logging

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)  # restored afterwards
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            setup_logging()
            warnings.warn("a deprecation from a library", FutureWarning, stacklevel=1)
            logging.getLogger("peft.tuners").warning("a library's note")
            logging.getLogger("compara.demo").info("our own line")
            err = capsys.readouterr().err
            assert "our own line" in err
            assert "deprecation" not in err and "library's note" not in err
            assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
            setup_logging(verbose=True)
            warnings.warn("another deprecation", FutureWarning, stacklevel=1)
            assert "another deprecation" in capsys.readouterr().err
    finally:
        logging.captureWarnings(False)
        logging.getLogger().handlers.clear()
        for name in ("py.warnings", "peft"):
            logging.getLogger(name).setLevel(logging.NOTSET)

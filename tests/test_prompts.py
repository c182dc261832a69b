import json

import pytest

from core.prompts import PromptTemplate, RagTemplate


def test_training_and_inference_render_the_same_bytes(tmp_path):
    tpl = PromptTemplate.load()
    rec = {"instruction": "Quem foi Tiradentes?", "input": "", "output": "Um dentista."}
    prompt, response = tpl.render_record(rec)
    # What the adapter stores is what inference reloads.
    tpl.save(tmp_path)
    again = PromptTemplate.from_dir(tmp_path)
    assert again == tpl and again.fingerprint == tpl.fingerprint
    assert again.render("Quem foi Tiradentes?") == prompt
    assert prompt.endswith("### Resposta:\n") and response == "Um dentista."


def test_input_and_no_input_variants():
    tpl = PromptTemplate.load()
    with_input = tpl.render("Resuma.", "Um texto.")
    assert "### Entrada:\nUm texto." in with_input
    assert "### Entrada" not in tpl.render("Resuma.")
    assert with_input.rstrip().endswith(tpl.response_split)  # the answer is written after it


def test_rag_prompt_numbers_passages_and_goes_through_the_instruction_template():
    tpl, rag = PromptTemplate.load(), RagTemplate.load()
    passages = [{"title": "Brasília", "section": "História", "text": "Inaugurada em 1960."},
                {"title": "Rio Amazonas", "section": "", "text": "Nasce nos Andes."}]
    prompt = rag.render(tpl, "Quando Brasília foi inaugurada?", passages)
    assert "[1] Brasília — História\nInaugurada em 1960." in prompt
    assert "[2] Rio Amazonas\nNasce nos Andes." in prompt
    assert rag.abstain in prompt
    assert prompt.startswith(tpl.prompt_input.split("{instruction}")[0])
    assert prompt.endswith("Pergunta: Quando Brasília foi inaugurada?\n\n### Resposta:\n")


def test_broken_template_is_refused(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "x", "prompt_input": "{instruction}", "prompt_no_input": "{instruction}",
                                "response_split": "R:"}))
    with pytest.raises(ValueError, match="input"):
        PromptTemplate.load(path)
    with pytest.raises(FileNotFoundError, match="alpaca-pt"):
        PromptTemplate.load("nope")

"""Answers end where the template ends: stop strings, applied alike to every arm."""

from __future__ import annotations

import pytest

from compara.comparison import Comparison
from core.config import GenerationConfig, ModelConfig
from core.generation import StopFilter, generate, generate_stream, stop_string_cut
from core.prompts import PromptTemplate, RagTemplate

PROMPT = PromptTemplate.load().render("Onde nasce o Rio Verde-Claro?")


@pytest.fixture(scope="module")
def loaded(one_torch_thread):
    from core.models import load_base

    return load_base(ModelConfig(base="tiny-random-llama", quantize="none", dtype="float32"))


def _decoding(**kw) -> GenerationConfig:
    return GenerationConfig(**{"max_new_tokens": 12, "batch_size": 2, **kw})


def _marker(loaded, gen) -> str:
    """A piece of text the model writes after its first tokens (a stop string it will meet)."""
    tok = loaded.tokenizer
    for start in range(2, len(gen.token_ids) - 1):
        piece = tok.decode(gen.token_ids[start:start + 2], skip_special_tokens=True)
        if piece.strip() and len(tok.decode(gen.token_ids[:start], skip_special_tokens=True).strip()):
            return piece
    pytest.skip("the tiny model wrote too little to pick a stop string from")


def test_the_template_s_section_marker_is_the_default():
    assert PromptTemplate.load().stop_markers == ["\n###"]
    tpl = PromptTemplate.load()
    assert GenerationConfig().resolved_stop_strings(tpl) == ["\n###", "\n"]
    assert GenerationConfig(stop_at_line_break=False).resolved_stop_strings(tpl) == ["\n###"]
    assert GenerationConfig(stop_strings=["FIM"]).resolved_stop_strings(tpl) == ["FIM", "\n"]
    assert GenerationConfig(stop_strings=[]).resolved_stop_strings(tpl) == []


def test_a_line_break_ends_an_answer_only_once_it_has_begun():
    stops = ["\n###", "\n"]
    assert stop_string_cut("Em Brasília.\nOutra coisa", stops) == len("Em Brasília.")
    assert stop_string_cut("\n\nEm Brasília.", stops) is None  # a blank line opens it
    assert stop_string_cut("\n\nEm Brasília.\n\n[5] Brasília", stops) == len("\n\nEm Brasília.")
    assert stop_string_cut("  \n", stops) is None
    assert stop_string_cut("Em Brasília.", stops, before="Resposta:\n") is None
    # the section marker still ends an answer that has not begun
    assert stop_string_cut("### Instrução:", stops, before="Resposta:\n") == 0


def test_no_training_output_holds_a_line_break(sample_ingest):
    """What makes the line-break rule fair: it never cuts an answer the way fine-tuning
    teaches to write one (every task, train and validation)."""
    from core.io import read_jsonl

    records = [r for name in ("train", "val")
               for r in read_jsonl(sample_ingest / f"instructions.{name}.jsonl")]
    assert len({r["task"] for r in records}) >= 5
    assert not [r["id"] for r in records if "\n" in r["output"]]


def test_a_stop_string_cut_counts_only_what_was_generated():
    assert stop_string_cut("Brasília.\n### Instrução:", ["\n###"]) == len("Brasília.")
    assert stop_string_cut("Brasília.", ["\n###"]) is None
    # the prompt ends with a newline and the model writes the marker at once: an empty answer
    assert stop_string_cut("### Resposta:", ["\n###"], before=PROMPT) == 0
    # the prompt's own markers never count
    assert stop_string_cut("Fim.", ["\n###"], before="\n### Resposta:\n") is None
    assert stop_string_cut("a\n##b", ["\n###"]) is None
    assert stop_string_cut("x", []) is None


def test_the_stream_never_shows_the_marker():
    shown = StopFilter(["\n###"], before="Resposta:\n")
    pieces = ["Nasce na ", "serra.", "\n", "#", "## Instrução:", " mais"]
    out = "".join(shown.feed(p) for p in pieces) + shown.flush()
    assert out == "Nasce na serra." and shown.stopped
    shown = StopFilter(["\n###"])
    out = "".join(shown.feed(p) for p in ["uma linha\n", "#2 não é marcador"]) + shown.flush()
    assert out == "uma linha\n#2 não é marcador" and not shown.stopped


def test_generation_ends_at_a_stop_string_and_says_so(loaded):
    decoding = _decoding()
    (full,) = generate(loaded.model, loaded.tokenizer, [PROMPT], decoding)
    assert full.finish_reason in ("eos", "max_tokens")
    assert full.stopped_on_eos == (full.finish_reason == "eos")
    marker = _marker(loaded, full)
    whole = loaded.tokenizer.decode(full.token_ids, skip_special_tokens=True)
    (cut,) = generate(loaded.model, loaded.tokenizer, [PROMPT], decoding, stop_strings=[marker])
    assert cut.finish_reason == "stop_string" and cut.ended_cleanly and not cut.stopped_on_eos
    assert marker not in cut.text
    assert cut.text == whole[:whole.find(marker)].strip()
    assert cut.tokens_out < full.tokens_out and cut.token_ids == full.token_ids[:cut.tokens_out]
    # the stream shows the same answer, without the marker
    pieces = list(generate_stream(loaded.model, loaded.tokenizer, PROMPT, decoding,
                                  stop_strings=[marker]))
    final = pieces[-1]
    assert final.finish_reason == "stop_string" and final.text == cut.text
    assert "".join(pieces[:-1]).strip() == cut.text


def test_every_arm_gets_the_same_stop_strings_and_the_cache_key_knows_them(loaded):
    on = Comparison(loaded, _decoding(), PromptTemplate.load(), RagTemplate.load())
    off = on.with_settings(decoding=_decoding(stop_strings=[]))
    assert on.stop_strings("base") == ["\n###", "\n"] and off.stop_strings("rag") == []
    assert on.identity("base")["decoding"]["stop_strings"] == ["\n###", "\n"]
    assert "stop_strings" not in off.identity("base")["decoding"]
    assert on.cache_key("base", PROMPT) != off.cache_key("base", PROMPT)
    (ans,) = on.answer("base", ["Onde nasce o Rio Verde-Claro?"])
    assert ans.to_record()["finish_reason"] in ("eos", "stop_string", "max_tokens")
    assert "\n###" not in ans.text


def test_the_summary_has_the_ended_cleanly_rate_beside_stopped_on_eos():
    from compara.config import EvalConfig
    from compara.report import ended_cleanly, summarize

    recs = [{"question_id": str(i), "arm": "base", "answer": "x", "metrics": {},
             "stopped_on_eos": reason == "eos", "finish_reason": reason}
            for i, reason in enumerate(["eos", "stop_string", "stop_string", "max_tokens"])]
    recs.append({"question_id": "9", "arm": "base", "answer": "x", "metrics": {},
                 "stopped_on_eos": True})  # written before stop strings: EOS is clean
    assert [ended_cleanly(r) for r in recs] == [True, True, True, False, True]
    summary = summarize(recs, cfg=EvalConfig(bootstrap_resamples=0))
    metrics = summary["per_arm"]["base"]["metrics"]
    assert metrics["ended_cleanly"]["mean"] == pytest.approx(0.8)
    assert metrics["stopped_on_eos"]["mean"] == pytest.approx(0.4)


def test_an_empty_stop_string_is_refused():
    from compara.config import load_config
    from core.configbase import ConfigError

    with pytest.raises(ConfigError, match="stop_strings"):
        load_config(None, ['generation.stop_strings=[""]'])
    assert load_config(None, ["generation.stop_strings=[]"]).generation.stop_strings == []


def test_the_stopping_criterion_ends_a_row_at_the_step_its_text_first_holds_a_stop(loaded):
    """Fed one token at a time, the criterion stops each row at the first step where
    stop_string_cut finds a stop in its text (it decodes only rows whose newest token holds a
    stop string's last character) and keeps it stopped."""
    import torch

    from core.generation import stop_criteria

    tok = loaded.tokenizer
    stops = ["\n###", "\n"]
    texts = ["\n\nEm Brasília.\nOutra linha", "Nasce na serra.\n### Instrução:", "sem fim nenhum"]
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = 3
    (criterion,) = stop_criteria(tok, stops, ["Resposta:\n"] * 3, width)
    longest = max(len(r) for r in rows)
    padded = [r + [tok.pad_token_id] * (longest - len(r)) for r in rows]
    first_stop = [None, None, None]
    for step in range(1, longest + 1):
        ids = torch.tensor([[7] * width + p[:step] for p in padded])
        done = criterion(ids, None).tolist()
        for j in range(3):
            text = tok.decode(rows[j][:step], skip_special_tokens=True)
            should = stop_string_cut(text, stops, "Resposta:\n") is not None
            assert done[j] == (should or first_stop[j] is not None), (j, step, text)
            if done[j] and first_stop[j] is None:
                first_stop[j] = step
    assert first_stop[0] is not None and first_stop[1] is not None and first_stop[2] is None

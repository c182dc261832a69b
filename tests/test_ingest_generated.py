"""Model-written questions: passages, reply parsing, the pair checks, cache and resume, the
tiny random model, and an OpenAI-compatible stub server that answers well, badly and too late."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.configbase import ConfigError
from core.io import read_jsonl
from ingest import generated
from ingest.config import GeneratorConfig, IngestConfig
from ingest.generated import (
    CACHE_FILE,
    GeneratorError,
    add_generated_instructions,
    article_passages,
    check_pair,
    parse_reply,
)
from ingest.instructions import record_id, split_of

# Fictional articles written for these tests: sections long enough to make passages.
ARTICLES = [
    {"title": "Lagoa Dourada (Tocantins)", "aliases": ["Lagoa do Ouro"], "sections": [
        {"heading": "", "level": 0, "text":
            "A Lagoa Dourada é uma lagoa imaginária do leste do Tocantins, criada para exemplos. "
            "Ocupa cerca de doze quilômetros quadrados e fica a 410 metros de altitude. "
            "Suas águas escuras refletem a luz do entardecer com um tom de cobre."},
        {"heading": "Fauna", "level": 2, "text":
            "Na lagoa vivem tucunarés, piranhas e uma colônia de biguás que pesca nas manhãs frias. "
            "Em 1987 pescadores da vila de Porto Seco registraram ali uma lontra pela primeira vez. "
            "Desde então a espécie é vista todos os anos durante a estação seca."}]},
    {"title": "Otília Camargo", "aliases": [], "sections": [
        {"heading": "", "level": 0, "text":
            "Otília Camargo foi uma ceramista imaginária nascida em Cunha, no interior paulista. "
            "Aprendeu o ofício com o avô e abriu a sua primeira oficina em 1932, aos dezenove anos. "
            "As suas peças azuis eram vendidas nas feiras de Taubaté e de Guaratinguetá."},
        {"heading": "Obra", "level": 2, "text":
            "A obra mais conhecida de Otília Camargo é um painel de azulejos com quarenta metros "
            "de comprimento, montado na estação ferroviária de Lorena em 1951. O painel mostra "
            "tropeiros, mulas carregadas e o rio Paraíba ao fundo, pintados em três tons de azul."}]},
]
RULE_RECORD = {"id": "r1", "instruction": "Onde fica a Lagoa Dourada (Tocantins)?", "input": "",
               "output": "No leste do Tocantins.", "source_title": "Lagoa Dourada (Tocantins)",
               "task": "infobox"}


def _folder(tmp_path, articles=ARTICLES):
    out = tmp_path / "data"
    out.mkdir()
    (out / "articles.jsonl").write_text(
        "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in articles), encoding="utf-8")
    (out / "instructions.train.jsonl").write_text(json.dumps(RULE_RECORD, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
    (out / "instructions.val.jsonl").write_text("", encoding="utf-8")
    (out / "ingest_report.json").write_text('{"status": "complete"}', encoding="utf-8")
    return out


def _cfg(**generator):
    generator.setdefault("passage_chars", 300)
    return IngestConfig.from_dict({"instructions": {"generator": generator}})


def _title_and_passage(prompt: str) -> tuple[str, str]:
    return prompt.split('artigo "')[1].split('"')[0], prompt.split("Trecho:\n")[1].strip()


def good_reply(prompt: str) -> str:
    """Pairs of every kind about the passage: two good ones, one dangling, one unsupported, one
    with a long answer, and the rule-based question again."""
    title, passage = _title_and_passage(prompt)
    words = passage.split()
    number = next((w.strip(".,") for w in words if w.strip(".,").isdigit()), words[0])
    start = " ".join(words[:3])
    pairs = [
        {"pergunta": f'Sobre {title}, que número vem depois de "{start}"?', "resposta": number},
        {"pergunta": f'Sobre {title}, qual número completa "{start}"?', "resposta": number},
        {"pergunta": "Em que ano isso aconteceu?", "resposta": number},
        {"pergunta": f"Quem fundou {title}?", "resposta": "Um grupo de astronautas marcianos"},
        {"pergunta": f"O que se sabe de {title}?", "resposta": " ".join((words * 3)[:45])},
        {"pergunta": RULE_RECORD["instruction"], "resposta": number},
    ]
    return "Claro! Aqui está:\n```json\n" + json.dumps(pairs, ensure_ascii=False) + "\n```\nFim."


class FakeWriter:
    identity = {"model": "fake-writer", "temperature": 0.0}

    def __init__(self, reply=good_reply, batch_size=2, fail_on_call=None):
        self.reply, self.batch_size, self.fail_on_call = reply, batch_size, fail_on_call
        self.calls = 0
        self.prompts: list[str] = []

    def __call__(self, prompts):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt  # the run is killed mid-way
        self.prompts.extend(prompts)
        return [self.reply(p) for p in prompts]


def _generated(out):
    return [(split, rec) for split in ("train", "val")
            for rec in read_jsonl(out / f"instructions.{split}.jsonl") if rec["task"] == "generated"]


# -- pure pieces ---------------------------------------------------------------------------------

def test_passages_are_whole_sentences_of_one_section():
    passages = article_passages(ARTICLES[0], 300)
    assert [p.section for p in passages] == ["", "Fauna"]
    for p in passages:
        assert len(p.text) <= 300 * 1.5 and p.text.endswith(".")
        assert p.text in " ".join(s["text"] for s in ARTICLES[0]["sections"])
    assert len(article_passages(ARTICLES[0], 300, limit=1)) == 1
    assert passages[0].names == ("Lagoa Dourada (Tocantins)", "Lagoa Dourada", "Lagoa do Ouro")


@pytest.mark.parametrize("reply", [
    '```json\n[{"pergunta": "Onde fica X?", "resposta": "Em Y"}]\n```',
    'Aqui estão as perguntas: [{"pergunta": "Onde fica X?", "resposta": "Em Y"}] Espero ter ajudado!',
    '{"perguntas": [{"pergunta": "Onde fica X?", "resposta": "Em Y"}]}',
    '[{"pergunta": "Onde fica X?", "resposta": "Em Y"}, {"pergunta": "Quando',  # cut off
    '[{"question": "Onde fica X?", "answer": "Em Y"}]',
])
def test_replies_are_parsed_robustly(reply):
    items = parse_reply(reply)
    assert len(items) == 1 and set(items[0].values()) == {"Onde fica X?", "Em Y"}


@pytest.mark.parametrize("reply", ["Desculpe, não sei.", "[1, 2, 3]", '{"a": "b"}', ""])
def test_replies_without_pairs_are_refused(reply):
    with pytest.raises(ValueError, match="pergunta"):
        parse_reply(reply)


@pytest.mark.parametrize(("question", "answer", "reason"), [
    ("Em que ano Otília Camargo abriu a sua primeira oficina?", "Em 1932.", None),
    ("Onde nasceu Otília Camargo?", "Em Cunha, no interior paulista", None),
    ("Além da feira de Taubaté, em que feira se vendiam peças azuis?", "Na de Guaratinguetá",
     None),  # names another proper noun
    ("Em que ano ela abriu a oficina?", "1932", "not_self_contained"),
    ("Quantos metros tem o painel?", "quarenta metros", "not_self_contained"),
    ("Segundo o trecho, onde nasceu Otília Camargo?", "Cunha", "refers_to_passage"),
    ("Onde nasceu Otília Camargo?", "Em Lisboa", "unsupported"),
    ("Otília Camargo era ceramista?", "Sim.", "unsupported"),
    ("O que fez Otília Camargo?", " ".join(["peças azuis"] * 30), "answer_too_long"),
    ("", "1932", "malformed"),
])
def test_the_pair_checks(question, answer, reason):
    passage = article_passages(ARTICLES[1], 300)[0]
    assert check_pair(question, answer, passage, max_answer_words=40) == reason


def test_the_setting_is_off_by_default_and_validated():
    assert not IngestConfig().instructions.generator.enabled
    assert GeneratorConfig(endpoint="http://127.0.0.1:8000").enabled
    with pytest.raises(ConfigError, match="either model or endpoint"):
        _cfg(model="tiny-random-llama", endpoint="http://127.0.0.1:8000")
    with pytest.raises(ConfigError, match="endpoint"):
        _cfg(endpoint="127.0.0.1:8000")
    with pytest.raises(ConfigError, match="unknown setting"):
        _cfg(modle="x")


# -- the run, with a fake writer -----------------------------------------------------------------

def test_records_cache_and_a_rerun_without_model_calls(tmp_path):
    out = _folder(tmp_path)
    writer = FakeWriter()
    result = add_generated_instructions(out, _cfg(model="x"), writer=writer)
    assert result["passages"] == 4 and result["model_calls"] == 4 and writer.calls == 2
    assert len(read_jsonl(out / CACHE_FILE)) == 4
    records = _generated(out)
    assert len(records) == result["kept"] == 8  # two good questions per passage
    for split, rec in records:
        assert rec["task"] == "generated" and rec["generator"] == FakeWriter.identity
        assert rec["input"] == "" and rec["source_title"] in {a["title"] for a in ARTICLES}
        assert rec["id"] == record_id("generated", rec["instruction"], "")
        assert split == split_of(rec["id"], 0.08, "compara")
    assert result["rejected"]["not_self_contained"] == 4
    assert result["rejected"]["unsupported"] == 4 and result["rejected"]["answer_too_long"] == 4
    assert result["rejected"]["duplicate"] == 4  # the rule-based question, asked each time
    assert read_jsonl(out / "instructions.train.jsonl")[0] == RULE_RECORD  # kept as it was
    report = json.loads((out / "ingest_report.json").read_text(encoding="utf-8"))
    assert report["status"] == "complete" and report["generated"]["kept"] == 8

    def no_model(*_):
        raise AssertionError("the model was asked again")

    again = add_generated_instructions(out, _cfg(model="x"), writer=FakeWriter(reply=no_model))
    assert again["model_calls"] == 0 and again["from_cache"] == 4 and again["kept"] == 8
    assert again["appended"] == {"train": 0, "val": 0}
    assert _generated(out) == records  # nothing duplicated

    # A new ingest publishes the rule-based files afresh: the cache restores the same records.
    (out / "instructions.train.jsonl").write_text(json.dumps(RULE_RECORD, ensure_ascii=False) + "\n")
    (out / "instructions.val.jsonl").write_text("")
    add_generated_instructions(out, _cfg(model="x"), writer=FakeWriter(reply=no_model))
    assert _generated(out) == records


def test_budget_and_per_article_limit(tmp_path):
    out = _folder(tmp_path)
    writer = FakeWriter()
    assert add_generated_instructions(out, _cfg(model="x", max_passages=3), writer=writer)["passages"] == 3
    writer = FakeWriter()
    result = add_generated_instructions(out, _cfg(model="x", passages_per_article=1), writer=writer)
    assert result["passages"] == 2 and result["model_calls"] == 0  # both already cached


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    out = _folder(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        add_generated_instructions(out, _cfg(model="x"), writer=FakeWriter(fail_on_call=2))
    assert len(read_jsonl(out / CACHE_FILE)) == 2  # the first batch was kept
    writer = FakeWriter()
    result = add_generated_instructions(out, _cfg(model="x"), writer=writer)
    assert result["model_calls"] == 2 and result["from_cache"] == 2
    ids = [rec["id"] for _, rec in _generated(out)]
    assert len(ids) == len(set(ids)) == 8


def test_a_bad_reply_is_a_warning_and_the_rest_goes_on(tmp_path, caplog):
    out = _folder(tmp_path)

    def reply(prompt):
        return "Não consegui ler o trecho." if "Suas águas escuras" in prompt else good_reply(prompt)

    with caplog.at_level(logging.WARNING, logger="ingest.generated"):
        result = add_generated_instructions(out, _cfg(model="x"), writer=FakeWriter(reply=reply))
    assert result["bad_replies"] == 1 and result["kept"] == 6
    assert "'Lagoa Dourada (Tocantins)', passage 0" in caplog.text
    assert "pergunta" in caplog.text and result["problems"]


# -- the tiny random model -----------------------------------------------------------------------

def test_tiny_random_model_writes_through_the_cache(tmp_path, monkeypatch, one_torch_thread):
    out = _folder(tmp_path)
    cfg = _cfg(model="tiny-random-llama", max_passages=2, max_new_tokens=8, batch_size=2,
               device="cpu")
    result = add_generated_instructions(out, cfg)
    assert result["model_calls"] == 2 and result["passages"] == 2
    assert result["generator"]["model"] == "tiny-random-llama"
    cached = read_jsonl(out / CACHE_FILE)
    assert len(cached) == 2 and all(isinstance(c["reply"], str) for c in cached)
    for _, rec in _generated(out):  # noise rarely survives the checks; if it does, it is labelled
        assert rec["task"] == "generated" and rec["generator"]["model"] == "tiny-random-llama"

    def no_load(_):
        raise AssertionError("the model was loaded again")

    monkeypatch.setattr(generated, "load_writer", no_load)
    again = add_generated_instructions(out, cfg)
    assert again["model_calls"] == 0 and again["from_cache"] == 2


# -- an OpenAI-compatible server on this machine -------------------------------------------------

class _Stub(BaseHTTPRequestHandler):
    """Good JSON for most passages, prose for the ones about fauna, and no reply in time for
    the ones about Otília's work."""

    requests: list[dict] = []
    delay = 0.0

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        if self.path.endswith("/completions") and "chat" not in self.path:
            self.send_error(404)
            return
        prompt = body["messages"][0]["content"]
        if "painel de azulejos" in prompt:
            time.sleep(self.delay)
        text = "Infelizmente não sei responder." if "tucunarés" in prompt else good_reply(prompt)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data.encode())))
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture()
def stub_server():
    _Stub.requests = []
    _Stub.delay = 1.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_stub_server_good_bad_and_slow_replies(tmp_path, stub_server, caplog):
    out = _folder(tmp_path)
    cfg = _cfg(endpoint=stub_server + "/v1/", timeout_s=0.3, max_retries=1, api_model="stub",
               batch_size=2, seed=7)
    with caplog.at_level(logging.WARNING, logger="ingest.generated"):
        result = add_generated_instructions(out, cfg)
    assert result["passages"] == 4 and result["errors"] == 1 and result["bad_replies"] == 1
    assert result["kept"] == 4  # two passages answered well, two good pairs each
    assert "no reply within generator.timeout_s" in caplog.text
    assert "'Otília Camargo', passage 1" in caplog.text and "'Lagoa Dourada (Tocantins)', passage 1" in caplog.text
    slow = [r for r in _Stub.requests if "painel de azulejos" in r["messages"][0]["content"]]
    assert len(slow) == 2  # one retry
    first = _Stub.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["model"] == "stub"
    assert first["temperature"] == 0.0 and first["seed"] == 7 and first["max_tokens"] == 512
    for _, rec in _generated(out):
        assert rec["generator"]["endpoint"] == stub_server + "/v1"
    assert len(read_jsonl(out / CACHE_FILE)) == 3  # the unanswered passage is asked next time
    _Stub.requests, _Stub.delay = [], 0.0
    again = add_generated_instructions(out, cfg)
    assert again["model_calls"] == 1 and len(_Stub.requests) == 1 and again["errors"] == 0
    assert again["kept"] == 6


def test_an_endpoint_that_refuses_the_route_stops_the_run(tmp_path, stub_server):
    out = _folder(tmp_path)
    with pytest.raises(GeneratorError, match="HTTP 404"):
        add_generated_instructions(out, _cfg(endpoint=stub_server, api="completions"))
    assert read_jsonl(out / "instructions.train.jsonl") == [RULE_RECORD]


def test_a_server_that_is_down_is_given_up_after_a_few_passages(tmp_path, caplog):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    articles = [dict(a, title=f"{a['title']} {i}") for i in range(4) for a in ARTICLES]
    out = _folder(tmp_path, articles)
    with caplog.at_level(logging.WARNING, logger="ingest.generated"):
        result = add_generated_instructions(
            out, _cfg(endpoint=f"http://127.0.0.1:{port}", max_retries=0, batch_size=1))
    assert result["errors"] == generated.FAILURES_BEFORE_GIVING_UP
    assert result["not_asked"] == result["passages"] - generated.FAILURES_BEFORE_GIVING_UP > 0
    assert "connection refused" in caplog.text and "seems down" in caplog.text


def test_compara_ingest_runs_the_hook(tmp_path, sample_dump, stub_server):
    from typer.testing import CliRunner

    from compara.cli import app

    _Stub.delay = 0.0
    out = tmp_path / "data"
    res = CliRunner().invoke(app, [
        "-q", "ingest", str(sample_dump), "--out", str(out), "--json",
        "-s", f"ingest.instructions.generator.endpoint={stub_server}",
        "-s", "ingest.instructions.generator.max_passages=2"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "ingest_report.json").read_text(encoding="utf-8"))
    assert report["generated"]["passages"] == 2 and report["generated"]["model_calls"] == 2
    assert json.loads(res.stdout)["generated"]["passages"] == 2
    train = read_jsonl(out / "instructions.train.jsonl")
    assert sum(r["task"] != "generated" for r in train) == report["instructions"]["train"]


def test_a_chat_model_gets_its_template_and_a_base_model_the_plain_prompt():
    from types import SimpleNamespace

    from core.models.tiny import build_tokenizer

    tok = build_tokenizer()
    writer = generated.ModelWriter(GeneratorConfig(model="x"))
    writer.loaded = SimpleNamespace(tokenizer=tok, info=SimpleNamespace(tokenizer={"adds_bos": True}))
    assert writer.render("Pergunta?") == "Pergunta?" + generated.COMPLETION_SUFFIX
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
                         "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    text = writer.render("Pergunta?")
    assert text == "<|user|>Pergunta?<|assistant|>"  # BOS left to the tokenizer, not doubled

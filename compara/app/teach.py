"""The Teach tab: what each of the experiment's arms is and why the answers differ, in plain
words, next to the live example (the question just asked) and the exposure plot of a batch run."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from compara.app import files
from compara.app.ask_tab import fit, md
from compara.app.i18n import Tr
from compara.runs import SUMMARY

if TYPE_CHECKING:
    from compara.app.rounds import Round
    from compara.arms import ArmConfig
    from compara.config import ExperimentConfig

# The four default arms, in plain words; any other arm of the config is described from its
# data (:func:`arms_text`).
ARMS_TEXT = {
    "pt": {
        "base": """**Base.** O modelo como saiu do treinamento original. Responde só com o que
"lembra" dos textos que viu. Modelos pequenos escrevem um português fluente, mas erram muitos
fatos.""",
        "rag": """**Base + RAG** (geração aumentada por recuperação). Antes de responder, o sistema
busca no índice da Wikipédia os trechos mais parecidos com a pergunta e os coloca no prompt. O
modelo é o mesmo: muda só o que ele lê. Se a busca traz o trecho certo, a resposta pode usar o
fato; se não traz, não há milagre.""",
        "finetuned": """**Ajustado (QLoRA).** O mesmo modelo com um pequeno adaptador treinado em
pares de pergunta e resposta tirados dos mesmos artigos. O ajuste ensina sobretudo a *forma*:
responder direto, em português, e parar no fim. Um fato só fica na memória quando aparece muitas
vezes no treinamento, e mesmo assim o modelo pode misturá-lo com outros.""",
        "finetuned+rag": """**Ajustado + RAG.** O adaptador ligado e os trechos no prompt: a forma
aprendida mais o fato lido na hora.""",
    },
    "en": {
        "base": """**Base.** The model as its original training left it. It answers only from what
it "remembers" of the texts it saw. Small models write fluent Portuguese but get many facts
wrong.""",
        "rag": """**Base + RAG** (retrieval-augmented generation). Before answering, the system
searches the Wikipedia index for the passages closest to the question and puts them in the
prompt. The model is the same: only what it reads changes. If the search brings the right
passage the answer can use the fact; if it does not, there is no miracle.""",
        "finetuned": """**Fine-tuned (QLoRA).** The same model with a small adapter trained on
question–answer pairs drawn from the same articles. Fine-tuning mostly teaches *form*: answer
directly, in Portuguese, and stop at the end. A fact sticks only when it appears many times in
training, and even then the model may blend it with others.""",
        "finetuned+rag": """**Fine-tuned + RAG.** The adapter on and the passages in the prompt:
the learned form plus the fact read at answer time.""",
    },
}


def arms_text(cfg: ExperimentConfig, tr: Tr) -> str:
    """The experiment's arms in plain words, in the config's order: a default arm as it is
    (same name, adapter and retrieval, no label of its own) by :data:`ARMS_TEXT`, any other
    from its data (adapter, retrieval settings)."""
    from compara.arms import default_arm_configs

    defaults = {a.name: a for a in default_arm_configs()}
    out = []
    for arm in cfg.arms:
        usual = defaults.get(arm.name)
        if usual is not None and not arm.label and (arm.adapter, arm.retrieval) == (
                usual.adapter, usual.retrieval):
            out.append(ARMS_TEXT[tr.lang][arm.name])
        else:
            out.append(describe_arm(arm, tr))
    return "\n\n".join(out)


def describe_arm(arm: ArmConfig, tr: Tr) -> str:
    """One arm from its data: its title (and name), its adapter, its retrieval."""
    title = tr.arm(arm.name)
    head = f"**{title}**" + (f" (`{arm.name}`)" if title != arm.name else "")
    if arm.adapter is None:
        adapter = tr("teach_arm_no_adapter")
    elif arm.adapter is True:
        adapter = tr("teach_arm_adapter")
    else:
        adapter = tr("teach_arm_adapter_in", path=Path(str(arm.adapter)).name)
    if arm.retrieval is None:
        retrieval = tr("teach_arm_no_retrieval")
    elif isinstance(arm.retrieval, dict) and arm.retrieval:
        changes = ", ".join(f"{k} = {v}" for k, v in arm.retrieval.items())
        retrieval = tr("teach_arm_retrieval_with", changes=changes)
    else:
        retrieval = tr("teach_arm_retrieval")
    return f"{head}. {adapter}; {retrieval}."


WHY_TEXT = {
    "pt": """
- **Tudo igual, menos uma coisa.** Todos os braços usam os mesmos pesos, a mesma quantização e a
  mesma decodificação. Só mudam o adaptador (ligado ou desligado) e o contexto (com ou sem
  trechos). Por isso as diferenças entre as colunas vêm dessas duas escolhas.
- **A recuperação acrescenta informação na hora da pergunta**, sem mudar o modelo. O limite dela é
  a busca: veja *suporte* (a referência estava nos trechos?) e *acerto da busca* (algum
  trecho veio do artigo certo?). Com suporte e resposta errada, o problema é o modelo; sem
  suporte, é a busca.
- **O ajuste fino muda o comportamento, não vira um banco de dados.** Um fato visto uma ou duas
  vezes no treinamento raramente é lembrado. O ajuste ensina estilo, formato e quando parar (veja
  "parou no EOS"), e pode até deixar o modelo mais confiante em respostas erradas.
""",
    "en": """
- **Everything equal but one thing.** All the arms share the same weights, quantisation and
  decoding. Only the adapter (on or off) and the context (with or without passages) change, so
  the differences between the columns come from those two choices.
- **Retrieval adds information at question time** without changing the model. Its limit is the
  search: see *support* (was the reference in the passages?) and *retrieval hit* (did a passage
  come from the right article?). With support and a wrong answer the model is at fault; without
  support, the search is.
- **Fine-tuning changes behaviour; it does not become a database.** A fact seen once or twice in
  training is rarely recalled. Fine-tuning teaches style, format and when to stop (see "stopped
  at EOS"), and can even make the model more confident in wrong answers.
""",
}

EXPOSURE_TEXT = {
    "pt": """
Para cada pergunta contamos quantas vezes a resposta de referência aparece nas respostas do
conjunto de treinamento do ajuste fino (faixas 0, 1–2, 3–5, 6–10, 11+). O gráfico mostra, em cada
faixa, a taxa de acerto (*contém*) de cada braço, com o intervalo de 95%.

- Se o ajuste fino memoriza fatos, a barra do braço ajustado **sobe nas faixas de maior
  exposição** e fica baixa na faixa 0.
- Os braços com RAG tendem a ficar **parecidos em todas as faixas**: eles leem o fato em vez de
  lembrá-lo.
- Faixas com poucas perguntas têm intervalos largos: compare os intervalos, não só as barras.
""",
    "en": """
For each question we count how many times its reference answer appears in the outputs of the
fine-tuning training set (bins 0, 1–2, 3–5, 6–10, 11+). The plot shows, per bin, each arm's
accuracy (*contains*) with its 95% interval.

- If fine-tuning memorises facts, the fine-tuned arm's bar **rises in the high-exposure bins**
  and stays low in bin 0.
- The retrieval arms tend to look **alike across bins**: they read the fact instead of
  remembering it.
- Bins with few questions have wide intervals: compare the intervals, not just the bars.
""",
}


def teach_tab(cfg: ExperimentConfig, rnd: Round | None, tr: Tr) -> None:
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.markdown(f"### {tr('teach_arms')}")
        st.markdown(arms_text(cfg, tr))
        st.markdown(f"### {tr('teach_why')}")
        st.markdown(WHY_TEXT[tr.lang])
    with right:
        st.markdown(f"### {tr('teach_live')}")
        live_example(cfg, rnd, tr)
    st.markdown(f"### {tr('teach_exposure')}")
    st.markdown(EXPOSURE_TEXT[tr.lang])
    exposure_plot(cfg, tr)


def live_example(cfg: ExperimentConfig, rnd: Round | None, tr: Tr) -> None:
    """The question just asked, read with the words above (never while it is blind)."""
    if rnd is None or not rnd.records:
        st.info(tr("teach_no_round"))
        return
    if rnd.hidden:
        st.info(tr("teach_blind"))
        return
    st.markdown(f"*{md(rnd.question.question)}*")
    if not rnd.question.reference:
        st.caption(tr("teach_no_reference"))
    seen = exposure_count(cfg, rnd)
    if seen is not None:
        st.caption(tr("teach_seen", n=seen))
    for arm in rnd.order:
        record = rnd.records.get(arm)
        if record is not None:
            st.markdown(f"**{tr.arm(arm)}** — " + "; ".join(reading(record, tr)) + ".")


def reading(record: dict[str, Any], tr: Tr) -> list[str]:
    """What a record says, in words: found the reference? was it in the passages? stopped?"""
    m = record.get("metrics") or {}
    out = []
    if m.get("contains") is not None:
        out.append(tr("read_contains") if m["contains"] else tr("read_not_contains"))
    if m.get("support") is not None:
        out.append(tr("read_support") if m["support"] else tr("read_no_support"))
    if m.get("abstained"):
        out.append(tr("read_abstained"))
    reason = record.get("finish_reason") or ("eos" if record.get("stopped_on_eos") else "max")
    out.append(tr({"eos": "read_eos", "stop_string": "read_stop_string"}.get(reason, "read_cut")))
    return out


def exposure_count(cfg: ExperimentConfig, rnd: Round) -> int | None:
    """How many training outputs contain the round's reference (None: no reference or data)."""
    train = Path(cfg.paths.data) / "instructions.train.jsonl" if cfg.paths.data else None
    if not rnd.question.reference or train is None or not train.is_file():
        return None
    stat = train.stat()
    return _exposure(str(train), stat.st_mtime_ns, tuple(rnd.question.reference),
                     cfg.eval.keep_accents)


@lru_cache(maxsize=64)
def _exposure(train: str, mtime_ns: int, reference: tuple[str, ...], keep_accents: bool) -> int:
    from core.exposure import compute_exposure

    found = compute_exposure([{"id": "q", "reference": list(reference)}], train, keep_accents)
    return found["q"].outputs if "q" in found else 0


def exposure_plot(cfg: ExperimentConfig, tr: Tr) -> None:
    """The exposure plot of the run opened in the Batch tab (else the newest run that has one)."""
    from compara.report_html import plot_exposure

    runs = files.run_folders(cfg)
    chosen = st.session_state.get("batch_dir")
    folders = ([Path(chosen)] if chosen else []) + list(runs.values())
    for folder in folders:
        try:
            summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        img = plot_exposure(summary) if summary.get("exposure") else None
        if img:
            st.caption(tr("teach_plot_of", run=folder.name))
            st.html(fit(img))
            return
    st.info(tr("teach_no_plot"))

"""The sidebar: what to load, this session's arms, retrieval and decoding, what is loaded;
and the page's frame (the launcher's config, the comparison or a message)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import streamlit as st

from compara.app import files, state
from compara.app.ask_tab import error_message, user_errors
from compara.app.i18n import LANGUAGES, Tr

if TYPE_CHECKING:
    from compara.comparison import Comparison
    from compara.config import ExperimentConfig

log = logging.getLogger(__name__)


# -- the page's frame -------------------------------------------------------------------------

def config_or_stop() -> ExperimentConfig:
    """The launcher's experiment config; a bad one is a message on an otherwise empty page."""
    try:
        return state.launcher_config()
    except user_errors() as exc:
        log.error("config: %s", exc)
        st.error(Tr("pt")("config_error", err=str(exc)) + "\n\n"
                 + Tr("en")("config_error", err=str(exc)))
        st.stop()


def load(cfg: ExperimentConfig, tr: Tr) -> Comparison | None:
    """The comparison the sidebar names (loaded once per process), or None with a message."""
    try:
        with st.spinner(tr("loading_model"), show_time=True):
            return state.comparison(cfg)
    except user_errors() as exc:  # a missing model, a mismatched adapter, a refused index
        log.warning("loading failed: %s", exc)
        st.error(tr("load_failed", err=str(exc)))
    except Exception as exc:
        st.error(error_message(exc, tr, tr("sb_model")))
    return None


# -- sidebar ----------------------------------------------------------------------------------

def language(cfg: ExperimentConfig) -> Tr:
    """The page's strings in the language chosen, naming the experiment's arms."""
    from compara.arms import experiment_arms

    codes = list(LANGUAGES)
    code = st.sidebar.radio("Idioma · Language", codes, format_func=LANGUAGES.get,
                            index=codes.index(cfg.app.language), horizontal=True, key="lang")
    return Tr(code, experiment_arms(cfg))


def _pick(label: str, choices: dict[str, Any], configured: str | None, key: str, tr: Tr,
          help: str) -> str | None:
    options: list[str | None] = [None, *choices]
    default = files.label_of(choices, configured)
    return st.selectbox(label, options, index=options.index(default) if default else 0,
                        format_func=lambda o: tr("none") if o is None else o, key=key, help=help)


def model_choice(cfg: ExperimentConfig, tr: Tr) -> state.ModelChoice:
    """Base model, quantisation, adapter and index (defaults: the experiment config)."""
    from core.models import REGISTRY

    bases = list(dict.fromkeys([cfg.model.base, *(n for n, s in REGISTRY.items() if s.available())]))
    quants = ["4bit", "8bit", "none"]
    with st.sidebar:
        st.subheader(tr("sb_model"))
        base = st.selectbox(tr("base_model"), bases, key="base", help=tr("base_model_help"))
        quantize = st.selectbox(tr("quantize"), quants, index=quants.index(cfg.model.quantize),
                                key="quantize", help=tr("quantize_help"))
        adapters, indexes = files.adapter_folders(cfg), files.index_folders(cfg)
        adapter = _pick(tr("adapter"), adapters, cfg.paths.adapter, "adapter", tr, tr("adapter_help"))
        index = _pick(tr("index"), indexes, cfg.paths.index, "index", tr, tr("index_help"))
    return state.ModelChoice(base, quantize, str(adapters[adapter]) if adapter else None,
                             str(indexes[index]) if index else None)


def request_settings(cfg: ExperimentConfig, comparison: Comparison, tr: Tr
                     ) -> tuple[Comparison, list[str]]:
    """Arms, retrieval and decoding of this session: a view of the shared comparison."""
    from compara.arms import arm_order

    available = comparison.arms
    g, app = cfg.generation, cfg.app
    with st.sidebar:
        arms = st.multiselect(tr("arms"), available, default=available, key="arms",
                              format_func=tr.arm, help=tr("arms_help"))
        for name, arm in comparison.all_arms.items():  # the config's arms that cannot answer
            if name not in available:
                st.caption(tr("arm_unavailable", arm=tr.arm(name), why=comparison.missing(arm)))
        retrieval = cfg.retrieval
        if comparison.index is not None:
            st.subheader(tr("sb_retrieval"))
            kinds = ["hybrid", "dense", "bm25"]
            kind = st.selectbox(tr("retriever"), kinds, index=kinds.index(retrieval.retriever),
                                format_func=lambda k: tr(f"retriever_{k}"), key="retriever")
            k = st.number_input(tr("top_k"), 1, app.max_top_k, min(retrieval.k, app.max_top_k),
                                key="top_k", help=tr("top_k_help"))
            retrieval = retrieval.replace(retriever=kind, k=int(k))
        st.subheader(tr("sb_decoding"))
        st.caption(tr("decoding_shared"))
        max_new = st.number_input(tr("max_new_tokens"), 1, app.max_new_tokens_limit,
                                  min(g.max_new_tokens, app.max_new_tokens_limit),
                                  key="max_new_tokens", help=tr("max_new_tokens_help"))
        sample = st.toggle(tr("do_sample"), value=g.do_sample, key="do_sample",
                           help=tr("do_sample_help"))
        decoding = g.replace(max_new_tokens=int(max_new), do_sample=sample)
        if sample:
            decoding = decoding.replace(
                temperature=st.slider(tr("temperature"), 0.05, 2.0, float(g.temperature), 0.05,
                                      key="temperature"),
                top_p=st.slider("top-p", 0.05, 1.0, float(g.top_p), 0.05, key="top_p"),
                top_k=int(st.number_input(tr("sample_top_k"), 1, 500, min(max(g.top_k, 1), 500),
                                          key="sample_top_k")),
                seed=int(st.number_input(tr("seed"), 0, 2**31 - 1, g.seed, key="seed")))
        penalty = st.number_input(tr("repetition_penalty"), 1.0, 2.0,
                                  min(max(g.repetition_penalty, 1.0), 2.0), 0.05,
                                  key="repetition_penalty", help=tr("repetition_penalty_help"))
        decoding = decoding.replace(repetition_penalty=float(penalty))
    view = comparison.with_settings(decoding=decoding, retrieval=retrieval)
    return view, arm_order(arms, available)  # the config's order, whatever order they were picked


def loaded_info(comparison: Comparison, tr: Tr) -> None:
    """What is loaded: model, adapter (and its training summary), index (and its manifest)."""
    info = comparison.loaded.info
    with st.sidebar.expander(tr("loaded"), expanded=False):
        st.markdown(tr("loaded_model", base=info.base, kind=info.kind, arch=info.architecture,
                       params=f"{info.parameters / 1e6:,.1f}M", quantize=info.quantize,
                       dtype=info.dtype, device=info.device, seconds=info.load_seconds,
                       cpu=(f" ({info.cpu_capability}, "
                            f"{'native bf16' if info.bf16_native else 'no native bf16'})"
                            if info.cpu_capability else "")))
        adapters = list(comparison.loaded.adapters.values())  # each adapter an arm uses
        if not adapters:
            st.caption(tr("loaded_no_adapter"))
        for adapter in adapters:
            s = adapter.summary
            st.markdown(tr("loaded_adapter", path=adapter.path, template=adapter.template.name,
                           steps=s.get("steps"), loss0=_num(s.get("eval_loss_start")),
                           loss=_num(s.get("eval_loss_best")), quantize=s.get("quantize")))
            st.json({k: s.get(k) for k in ("adapter", "data", "steps", "epochs",
                                           "eval_loss_start", "eval_loss_best", "train_tokens",
                                           "finished") if k in s}, expanded=False)
        if comparison.index is None:
            st.caption(tr("loaded_no_index"))
        else:
            m = comparison.index.manifest
            st.markdown(tr("loaded_index", path=str(comparison.index.folder),
                           chunks=m["counts"]["chunks"], articles=m["counts"].get("articles"),
                           embedder=m["embedder"]["id"], faiss=m["faiss"]["type"],
                           created=m.get("created_at", "?")))


def _num(x: Any) -> str:
    return "—" if x is None else f"{x:.3f}"

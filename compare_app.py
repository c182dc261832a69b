"""compara's Streamlit app: the arms' answers side by side, batch runs, blind rating.

Start it with `compara app` (or `make app`): it binds to 127.0.0.1. Everything below is drawn
from compara.app; this file only says what goes where on the page.
"""

import streamlit as st

from compara.app import ask_tab, batch_view, rating_view, sidebar, state, teach

st.set_page_config(page_title="compara", page_icon="⚖️", layout="wide")
state.configure_logging()

# The experiment config `compara app` was started with, and the page's language.
cfg = sidebar.config_or_stop()
tr = sidebar.language(cfg)
st.title("compara")
st.caption(tr("subtitle"))

# Sidebar: what to load (once per process, shared by every session), then this session's
# arms, retrieval and decoding settings.
cfg = state.apply_choice(cfg, sidebar.model_choice(cfg, tr))
comparison = sidebar.load(cfg, tr)
view, arms = sidebar.request_settings(cfg, comparison, tr) if comparison else (None, [])
if comparison:
    sidebar.loaded_info(comparison, tr)

asking, batches, board, learning = st.tabs(
    [tr("tab_ask"), tr("tab_batch"), tr("tab_board"), tr("tab_teach")])
with asking:
    if comparison:
        ask_tab.ask_tab(cfg, comparison, view, arms, tr)
    else:
        st.info(tr("needs_model"))
with batches:
    batch_view.batch_tab(cfg, view, arms, tr)
with board:
    rating_view.leaderboard_tab(cfg, tr)
with learning:
    teach.teach_tab(cfg, st.session_state.get("round"), tr)

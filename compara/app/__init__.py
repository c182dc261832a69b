"""The Streamlit app (``compare_app.py``): answers side by side, batch runs, blind rating.

The page itself is short; its pieces live here so they can be tested without a browser:

- :mod:`compara.app.config`  the ``app:`` section of the experiment config
- :mod:`compara.app.state`   settings from the launcher, the comparison loaded once per
  process (``st.cache_resource``), per-session state
- :mod:`compara.app.files`   what the pickers may list (question files, runs, adapters, indexes)
- :mod:`compara.app.rounds`  a round: one question through the arms (its records from
  :class:`compara.pipeline.Pipeline`, the answer path of `compara batch`)
- :mod:`compara.app.rating`  blind order, the votes file, win rates, Bradley–Terry and Elo
- :mod:`compara.app.sidebar`, :mod:`compara.app.ask_tab` (Ask), :mod:`compara.app.batch_view`,
  :mod:`compara.app.rating_view` (vote, Leaderboard), :mod:`compara.app.teach` (Learn): what is
  drawn on the page
- :mod:`compara.cli.app` (`compara app`), :mod:`compara.app.check` (the real-browser check)
- :mod:`compara.app.i18n`    every string of the page in Portuguese (pt-BR) and English

Importing this package imports nothing heavy (no streamlit, torch or transformers).
"""

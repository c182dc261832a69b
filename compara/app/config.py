"""Settings of the Streamlit app (the ``app:`` section of an experiment config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configbase import ConfigBase, ConfigError, opt

# How `compara app` hands its experiment config to the Streamlit process.
ENV_CONFIG = "COMPARA_APP_CONFIG"  # the YAML path ("" = configs/sample.yaml)
ENV_SET = "COMPARA_APP_SET"  # a JSON list of key=value overrides


@dataclass
class AppConfig(ConfigBase):
    """`compara app`: where it listens and the bounds of what a user may ask for."""

    host: str = opt("127.0.0.1", "Address the server binds to. The app has no login: keep it "
                                 "on localhost unless the network is trusted.")
    port: int = opt(8501, "Port of the server.")
    language: Literal["pt", "en"] = opt("pt", "Language of the page when it opens (pt = pt-BR).")
    max_new_tokens_limit: int = opt(1024, "Largest max-new-tokens a user can choose.")
    max_top_k: int = opt(20, "Largest number of passages a user can ask the retriever for.")
    max_reference_chars: int = opt(500, "Longest reference answer a user can type.")
    blind_default: bool = opt(False, "Open the Ask tab in blind-rating mode.")
    cached_models: int = opt(2, "Model + adapter + index combinations kept loaded at once "
                                "(each holds a copy of the weights in memory).")
    leaderboard_resamples: int = opt(500, "Bootstrap resamples of the votes for the "
                                          "leaderboard's intervals.")
    elo_k: float = opt(16.0, "K factor of the online Elo rating.")

    def validate(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError("app.port must be in 1..65535")
        for name in ("max_new_tokens_limit", "max_top_k", "max_reference_chars", "cached_models"):
            if getattr(self, name) < 1:
                raise ConfigError(f"app.{name} must be >= 1")
        if self.leaderboard_resamples < 0:
            raise ConfigError("app.leaderboard_resamples must be >= 0")
        if self.elo_k <= 0:
            raise ConfigError("app.elo_k must be > 0")

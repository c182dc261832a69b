"""Where things live: the project root (for shipped configs and data) and the cache."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The checkout that holds configs/, data/ and questions/ (this package's parent).

    compara is installed in editable mode from its checkout, so the package's parent is the
    project root. For other installs fall back to the current directory.
    """
    root = PACKAGE_DIR.parent
    if (root / "configs").is_dir():
        return root
    return Path.cwd()


def under(base: Path, value: str | None) -> str | None:
    """``value`` as an absolute path, a relative one taken from ``base`` (a config file's
    folder); None stays None."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def default_config_path() -> Path:
    return project_root() / "configs" / "sample.yaml"


def cache_dir() -> Path:
    """Converted models and other reusable downloads: $COMPARA_CACHE, else the user cache."""
    env = os.environ.get("COMPARA_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        path = base / "compara"
    path.mkdir(parents=True, exist_ok=True)
    return path

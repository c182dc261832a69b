"""Versions of Python and the libraries that shaped an output (recorded in every report)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """``{"python": ..., name: version}`` for the installed distributions among ``names``."""
    out = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out

"""Finding an app's asset runtime: the one lookup every testing tool starts from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..state import get_state

if TYPE_CHECKING:
    from flask import Flask

    from ..runtime import AssetRuntime

__all__ = ["runtime_of"]


def runtime_of(app: Flask) -> AssetRuntime:
    """The asset runtime of an app that called ``ofa.init_app(app)``."""
    return get_state(app).runtime

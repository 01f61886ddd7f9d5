"""Finding an app's asset runtime: the one lookup every testing tool starts from."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from ..runtime import AssetRuntime

__all__ = ["runtime_of"]


def runtime_of(app: Flask) -> AssetRuntime:
    """The asset runtime of an app that called ``ofa.init_app(app)``."""
    state = app.extensions.get("openfactory")
    if state is None:
        raise RuntimeError(
            f"the Flask app {app.import_name!r} has no OpenFactory extension: "
            "call 'ofa.init_app(app)' in its factory"
        )
    return state.runtime  # type: ignore[no-any-return]  # app.extensions holds Any

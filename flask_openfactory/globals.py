"""``current_openfactory``: the current app's asset runtime, like ``current_user``."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from flask import current_app
from werkzeug.local import LocalProxy

if TYPE_CHECKING:
    from .runtime import AssetRuntime


def _find_runtime() -> "AssetRuntime":
    state = current_app.extensions.get("openfactory")
    if state is None:
        raise RuntimeError(
            "The current Flask app has no OpenFactory extension. "
            "Did you forget to call 'ofa.init_app(app)' in your application factory?"
        )
    return cast("AssetRuntime", state.runtime)


current_openfactory: "AssetRuntime" = cast("AssetRuntime", LocalProxy(_find_runtime))

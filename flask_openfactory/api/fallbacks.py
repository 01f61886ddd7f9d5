"""The plain blueprint (not in the OpenAPI document): Swagger UI and JSON answers where no route is.

Routing 404 and 405 never reach a blueprint's error handler in Flask, so a
catch-all ``<prefix>/<path:rest>`` rule that takes every HTTP method answers
them as JSON; ``OPTIONS`` is then answered by ``answer_options``, with
exactly what the route serves. With an empty prefix there is no catch-all.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint as FlaskBlueprint
from flask import current_app, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from webargs.flaskparser import abort  # flask_smorest.abort, typed NoReturn
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import PathConverter, Rule

from ..state import OpenFactoryState
from .docs import add_swagger_ui
from .guards import guard
from .names import UI_BLUEPRINT
from .smorest_api import OpenFactoryApi


class AnyPathConverter(PathConverter):
    """Like ``path``, newlines included (``%0A`` in a URL), so the catch-all sees every path."""

    regex = "[^/][\\s\\S]*?"


# The order of an Allow header; other methods a host app serves follow, sorted.
_ALLOW_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# The catch-all's rules under the prefix: (rule, endpoint) in the UI blueprint.
_CATCH_ALL = (("", "not_found"), ("/", "not_found_slash"), ("/<ofa_anypath:rest>", "not_found_path"))


def ui_blueprint(state: OpenFactoryState, api: OpenFactoryApi) -> FlaskBlueprint:
    """Swagger UI, a JSON 404 for an unknown method, and the catch-all under a prefix."""
    runtime = state.runtime
    bp = guard(FlaskBlueprint(UI_BLUEPRINT, __name__, url_prefix=state.url_prefix or None))

    add_swagger_ui(bp, api)

    def unknown_method(name: str) -> ResponseReturnValue:
        known = sorted(runtime.methods)
        if name in known:
            abort(404, message=f"method {name!r} has no HTTP route: its name cannot be used in a URL")
        abort(
            404,
            message=f"asset {runtime.asset_uuid!r} has no method {name!r}; "
            f"known methods: {', '.join(known) or 'none'}",
            errors={"known_methods": known},
        )

    bp.add_url_rule("/methods/<name>", "unknown_method", unknown_method, methods=["POST"])

    if state.url_prefix:  # with no prefix, a catch-all would take over the host app's 404s

        def not_found(rest: str = "") -> ResponseReturnValue:
            allowed = _allowed_methods()
            if allowed:
                served = ", ".join(allowed)
                description = f"{request.path} does not serve {request.method}; it serves {served}"
                raise MethodNotAllowed(valid_methods=allowed, description=description)
            raise NotFound(f"{request.path} is not a route of the OpenFactory API; see {state.url_prefix}/docs")

        bp.record_once(lambda setup: _add_catch_all(setup, not_found))
    return bp


def _add_catch_all(setup: BlueprintSetupState, view: Callable[..., ResponseReturnValue]) -> None:
    """Rules without a method list: werkzeug matches them for every verb, unknown ones included.

    Flask always gives a rule a method list, so these are werkzeug rules added
    to the map directly, under the blueprint's name (its error handlers apply).
    """
    for path, name in _CATCH_ALL:
        endpoint = f"{setup.name}.{name}"
        setup.app.url_map.add(Rule(f"{setup.url_prefix}{path}", endpoint=endpoint))
        setup.app.view_functions[endpoint] = view


def _allowed_methods() -> list[str]:
    """The methods some real rule serves at this path (the catch-all excluded), in Allow order.

    Every method any rule of the app declares is tried: a host app's own
    route under the prefix may serve more than ours do.
    """
    adapter = current_app.create_url_adapter(request)
    if adapter is None:  # pragma: no cover - only without a request
        return []
    fallbacks = {f"{UI_BLUEPRINT}.{name}" for _, name in _CATCH_ALL}
    candidates = {m for rule in current_app.url_map.iter_rules() for m in rule.methods or ()}
    allowed = []
    for method in candidates:
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except Exception:  # NotFound, MethodNotAllowed, RequestRedirect: no rule for this method
            continue
        if endpoint not in fallbacks:
            allowed.append(method)
    order = {m: i for i, m in enumerate(_ALLOW_ORDER)}
    return sorted(allowed, key=lambda m: (order.get(m, len(order)), m))


def answer_options(prefix: str) -> ResponseReturnValue | None:
    """``OPTIONS`` on a route under the prefix: ``Allow`` is exactly what that route serves.

    Flask's automatic answer asks werkzeug for every method of every rule
    matching the path; the catch-all matches any method, so that list would
    be wrong. Only for rules with Flask's automatic ``OPTIONS`` (a view that
    handles ``OPTIONS`` itself keeps it), and only under the prefix.
    """
    rule = request.url_rule
    if request.method != "OPTIONS" or not getattr(rule, "provide_automatic_options", False):
        return None
    if request.path != prefix and not request.path.startswith(f"{prefix}/"):
        return None
    response = current_app.response_class(status=200)
    del response.headers["Content-Type"]  # no body, nothing to type
    response.headers["Allow"] = ", ".join(_allowed_methods())
    return response

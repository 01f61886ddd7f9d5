"""The webargs parser of the method routes: an empty body is ``{}``, and arguments are counted.

flask-smorest takes a Blueprint's parser from ``ARGUMENTS_PARSER``, so the
method routes' blueprints are a ``MethodBlueprint``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import current_app
from flask_smorest import Blueprint
from webargs import core as webargs_core
from webargs.flaskparser import FlaskParser, abort  # flask_smorest.abort, typed NoReturn

from ..state import get_state
from ..wire.commands import ArgumentLimits


class _BodyParser(FlaskParser):
    """An empty body is ``{}`` whatever its content type (no-argument methods).

    Also counts the arguments against ``OPENFACTORY_MAX_ARGUMENTS`` once the
    body is decoded, before the schema looks at any of them.
    """

    def _raw_load_json(self, req: Any) -> Any:
        if not req.get_data(cache=True):
            return webargs_core.missing
        try:
            body = super()._raw_load_json(req)
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
                raise  # webargs answers these with its 400
            # nesting past the decoder's limit, or an int over Python's 4300-digit limit
            abort(400, exc=exc, messages={"json": ["Invalid JSON body."]})
        if isinstance(body, dict):
            too_many = _limits().count_error(len(body))
            if too_many:
                abort(400, message=too_many)
        return body


def _limits() -> ArgumentLimits:
    api = get_state(current_app).api
    return api.limits if api is not None else ArgumentLimits()


class MethodBlueprint(Blueprint):  # type: ignore[misc]
    ARGUMENTS_PARSER = _BodyParser()

"""Who may use the asset's HTTP API: bearer tokens, and the host app's own check.

An app asset drives machines, so the method routes (``POST <prefix>/methods/<name>``)
can require ``Authorization: Bearer <token>`` with one of
``OPENFACTORY_API_TOKENS`` (several, so that a token can be rotated without a
moment where none works). Read routes (``/ready``, ``/attributes``, ``/methods``,
``/openapi.json``, ``/docs``, ``/metrics``) stay open unless
``OPENFACTORY_PROTECT_READ_ROUTES``; ``/health`` is always open, because
orchestrators probe it without credentials.

``OPENFACTORY_AUTHORIZE`` plugs in the host app's own policy (its sessions,
an API gateway header, mTLS...): a callable, or an import string naming one,
called as ``authorize(request, route_kind, method_name)`` before the tokens:

* ``route_kind`` is ``"method"`` (``method_name`` is the method called) or
  ``"read"`` (``method_name`` is None);
* return True to let the request through, False to refuse it (403), None to
  let the tokens decide; or ``abort(401)`` / ``abort(403, ...)`` yourself.

A hook that raises anything else refuses the request (500): a bug in the
policy must not open the door. Tokens are compared in constant time and never
logged, echoed or shown by the CLI, ``/ofa/ready`` or the metrics.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Request, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from .settings import api_tokens, authorize_hook, flag

METHOD_ROUTE = "method"
READ_ROUTE = "read"
SCHEME_NAME = "bearerAuth"  # the OpenAPI security scheme
REALM = "openfactory"

AuthorizeHook = Callable[[Request, str, str | None], bool | None]
# endpoint -> (route kind, method name), or None for a route that is always open
RouteClassifier = Callable[[str | None], tuple[str, str | None] | None]

log = logging.getLogger("flask_openfactory.auth")


@dataclass(frozen=True)
class AccessPolicy:
    """One app's access rules; ``repr`` never shows the tokens."""

    tokens: tuple[str, ...] | None = field(default=None, repr=False)
    protect_read: bool = False
    authorize: AuthorizeHook | None = None
    _encoded: tuple[bytes, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_encoded", tuple(t.encode() for t in self.tokens or ()))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AccessPolicy:
        return cls(
            tokens=api_tokens(config),
            protect_read=flag(config, "OPENFACTORY_PROTECT_READ_ROUTES"),
            authorize=authorize_hook(config),
        )

    def token_required(self, kind: str) -> bool:
        """Whether routes of this kind need a token (the OpenAPI document says so too)."""
        return self.tokens is not None and (kind == METHOD_ROUTE or self.protect_read)

    def accepts(self, token: str) -> bool:
        """Constant time per configured token, and every token is tried."""
        given = token.encode("utf-8", "replace")
        found = False
        for expected in self._encoded:
            found |= hmac.compare_digest(expected, given)
        return found

    def check(self, req: Request, kind: str, method: str | None) -> ResponseReturnValue | None:
        """None to let the request through, else the JSON refusal."""
        if req.method == "OPTIONS":
            return None  # CORS preflights never carry credentials
        if self.authorize is not None:
            verdict = self._ask_hook(req, kind, method)
            if verdict is True:
                return None
            if verdict is False:
                return _refuse(req, 403, "refused by the application's authorisation policy")
            if verdict is not None:
                return verdict  # the hook's own HTTP error, as JSON
        if not self.token_required(kind):
            return None
        header = req.headers.get("Authorization")
        token = bearer_token(header)
        if token is None:
            if not header:
                return _refuse(req, 401, "this route needs 'Authorization: Bearer <token>'",
                               {"WWW-Authenticate": f'Bearer realm="{REALM}"'})
            return _refuse(req, 401, "malformed Authorization header: send 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_request"'})
        if not self.accepts(token):
            return _refuse(req, 403, "the bearer token is not valid for this asset")
        return None

    def _ask_hook(self, req: Request, kind: str, method: str | None) -> bool | None | ResponseReturnValue:
        assert self.authorize is not None
        try:
            verdict = self.authorize(req, kind, method)
        except HTTPException as exc:
            code = exc.code or 403
            headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
            return _refuse(req, code, exc.description or exc.name, headers)
        except Exception:
            log.exception("OPENFACTORY_AUTHORIZE raised; refusing %s %s", req.method, req.path)
            return _json(500, "the application's authorisation policy failed; see the server log")
        if verdict is None or isinstance(verdict, bool):
            return verdict
        log.error("OPENFACTORY_AUTHORIZE returned %s, not True, False or None; refusing %s %s",
                  type(verdict).__name__, req.method, req.path)
        return _json(500, "the application's authorisation policy gave no answer; see the server log")


def bearer_token(header: str | None) -> str | None:
    """The token of ``Bearer <token>`` (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or any(c.isspace() for c in credentials):
        return None
    return credentials


def _json(code: int, message: str, headers: Mapping[str, str] | None = None) -> ResponseReturnValue:
    from werkzeug.http import HTTP_STATUS_CODES

    payload = {"code": code, "status": HTTP_STATUS_CODES.get(code, "Error"), "message": message}
    return jsonify(payload), code, dict(headers or {})


def _refuse(req: Request, code: int, message: str, headers: Mapping[str, str] | None = None) -> ResponseReturnValue:
    log.info("refused %s %s from %s: %d %s", req.method, req.path, req.remote_addr, code, message)
    return _json(code, message, headers)


def install(app: Flask, policy: AccessPolicy, classify: RouteClassifier) -> None:
    """Check every request to our routes before anything reads its body.

    One app-level hook rather than one per blueprint: flask-smorest's
    ``openapi.json`` blueprint is registered by the ``Api`` itself, and the
    hook must run before our blueprints' body parsing.
    """

    def guard() -> ResponseReturnValue | None:
        route = classify(request.endpoint)
        if route is None:
            return None
        return policy.check(request._get_current_object(), route[0], route[1])  # type: ignore[attr-defined]  # a LocalProxy

    if policy.tokens is None and policy.authorize is None:
        return  # nothing to check: no hook at all
    app.before_request(guard)


def security_doc(policy: AccessPolicy, kind: str) -> dict[str, Any]:
    """``blp.doc`` keywords for one operation: its security requirement, if any."""
    return {"security": [{SCHEME_NAME: []}]} if policy.token_required(kind) else {}


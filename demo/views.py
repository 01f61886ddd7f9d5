"""The host app's own page: it keeps working next to the extension's routes."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from flask_openfactory import current_openfactory

views = Blueprint("views", __name__)


@views.get("/")
def index() -> ResponseReturnValue:
    root = request.script_root
    return jsonify(
        asset_uuid=current_openfactory.asset_uuid,
        attributes={r.id: r.value for r in current_openfactory.records()},
        methods=sorted(current_openfactory.methods),
        links={"api": f"{root}/ofa/attributes", "docs": f"{root}/ofa/docs"},
    )

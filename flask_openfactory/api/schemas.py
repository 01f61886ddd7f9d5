"""The marshmallow schemas of the fixed routes and of every error answer.

apispec names a component after its class minus "Schema": keep the names
distinct from the generated "<Method>Arguments" ones (``FIXED_SCHEMA_NAMES``
reserves them).
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from ..wire.protocol import CONDITION, EVENTS, OPENFACTORY, SAMPLES


class ErrorSchema(ma.Schema):
    """Every error answer of our routes (documentation only)."""

    code = fields.Integer(required=True, metadata={"description": "HTTP status code"})
    status = fields.String(required=True, metadata={"description": "HTTP status name"})
    message = fields.String(required=True, metadata={"description": "What went wrong"})
    errors = fields.Dict(metadata={"description": "Validation errors by location and field"})


class PendingErrorSchema(ErrorSchema):
    """504 of a method call: where to fetch the result later."""

    correlation_id = fields.String(required=True)
    result_url = fields.String(required=True)
    ran = fields.Boolean(metadata={"description": (
        "true: the method ran and the log refused its result, which is written when the log takes "
        "writes again; absent: it may not have run yet")})


class HealthSchema(ma.Schema):
    status = fields.String(required=True, metadata={"description": "Always 'alive'"})
    asset_uuid = fields.String(required=True)
    pid = fields.Integer(required=True, metadata={"description": "Process answering"})


class ReadinessCheckSchema(ma.Schema):
    ok = fields.Boolean(required=True)
    detail = fields.String(required=True)
    since = fields.String(metadata={"description": "UTC time the state last changed"})


class ReadinessSchema(ma.Schema):
    ready = fields.Boolean(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(ReadinessCheckSchema), required=True)


class AttributeRecordSchema(ma.Schema):
    id = fields.String(required=True)
    value = fields.Raw(required=True, allow_none=True, metadata={"description": "A JSON scalar"})
    tag = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf([SAMPLES, EVENTS, CONDITION, OPENFACTORY]))
    timestamp = fields.String(required=True, metadata={"description": "UTC ISO 8601, milliseconds, 'Z'"})


class AttributeQuerySchema(ma.Schema):
    type = fields.String(
        validate=validate.OneOf([SAMPLES, EVENTS, CONDITION, OPENFACTORY]),
        metadata={"description": "Only attributes of this TYPE"},
    )


class MethodArgumentSchema(ma.Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    required = fields.Boolean(required=True)
    default = fields.Raw(allow_none=True, required=True)
    description = fields.String(required=True)


class MethodContractSchema(ma.Schema):
    name = fields.String(required=True)
    description = fields.String(required=True)
    signature = fields.String(required=True)
    url = fields.String(allow_none=True, required=True, metadata={"description": "Where to POST the arguments"})
    arguments = fields.List(fields.Nested(MethodArgumentSchema), required=True)


class MethodResultSchema(ma.Schema):
    method = fields.String(required=True)
    correlation_id = fields.String(required=True)
    sender_uuid = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["OK", "ERROR", "REJECTED"]))
    result = fields.Raw(allow_none=True, required=True, metadata={"description": "The return value, or its repr"})
    error = fields.String(allow_none=True, required=True, metadata={"description": "'Type: message' when it raised"})
    duration_ms = fields.Float(required=True)


class PendingCallSchema(ma.Schema):
    correlation_id = fields.String(required=True)
    method = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["PENDING"]))
    ran = fields.Boolean(metadata={"description": "true: it ran in the answering process; its result "
                                                  "is held until the log takes writes again"})
    detail = fields.String(metadata={"description": "Why the result of a call that ran is not recorded"})


FIXED_SCHEMA_NAMES = frozenset(
    {"Error", "PendingError", "Health", "ReadinessCheck", "Readiness", "AttributeRecord", "AttributeQuery",
     "MethodArgument", "MethodContract", "MethodResult", "PendingCall"}
)

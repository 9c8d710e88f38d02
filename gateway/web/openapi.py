"""The OpenAPI 3.1 document of the JSON API, built from the same declarations that route it.

`Document.add` is called by `api.operation` for each route; `render` also lists the one /api/v1 route that
lives elsewhere (the leads' decisions feed) and refuses to describe a path the app does not route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Map

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


@dataclass(frozen=True)
class Binary:
    media_types: tuple[str, ...]


def binary(*media_types: str) -> Binary:
    return Binary(media_types)


def _s(kind: str, **extra: Any) -> Schema:
    return {"type": kind, **extra}


def _obj(required: list[str], properties: dict[str, Schema], closed: bool = True) -> Schema:
    schema: Schema = {"type": "object", "required": required, "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


DATE = _s("string", format="date")
DATETIME = _s("string", format="date-time")
NULLABLE_DATE = {"type": ["string", "null"], "format": "date"}
QUALIFICATION = _obj(["kind"], {"kind": _s("string"), "last_day": NULLABLE_DATE, "reference": _s("string")})
SHIFT = _obj(
    ["days", "starts", "ends"],
    {
        "days": array(_s("string", enum=["mon", "tue", "wed", "thu", "fri", "sat", "sun"])),
        "starts": _s("string", pattern=r"^\d\d:\d\d$"),
        "ends": _s("string", pattern=r"^\d\d:\d\d$"),
    },
)
ASSIGNMENT_INPUT = _obj(
    ["zones", "first_day", "last_day"],
    {
        "zones": {**array(_s("string")), "description": "zone codes or their badge codes"},
        "first_day": DATE,
        "last_day": DATE,
        "shifts": array(ref("Shift")),
    },
)
HOLDER_FIELDS: dict[str, Schema] = {
    "family_name": _s("string", maxLength=120),
    "given_name": _s("string", maxLength=120),
    "country": _s("string", description="ISO 3166 alpha-2"),
    "role": _s("string", description="one of zones.yaml's roles"),
    "reference": _s("string", maxLength=64),
    "qualifications": array(ref("Qualification")),
}
SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        ["error", "detail"],
        {"error": _s("string"), "detail": _s("string"), "problems": array({})},
    ),
    "Reason": _obj([], {"reason": _s("string", maxLength=200)}),
    "Organisation": _obj(
        ["code", "name", "kind", "country", "holders"],
        {
            "code": _s("string"),
            "name": _s("string"),
            "kind": _s("string"),
            "country": _s("string"),
            "holders": _s("integer"),
        },
    ),
    "OrganisationInput": _obj(
        ["code", "name", "kind", "country"],
        {"code": _s("string"), "name": _s("string"), "kind": _s("string"), "country": _s("string")},
    ),
    "Qualification": QUALIFICATION,
    "Shift": SHIFT,
    "Assignment": _obj(
        ["zones", "badge_codes", "first_day", "last_day", "shifts"],
        {
            "zones": array(_s("string")),
            "badge_codes": array(_s("string")),
            "first_day": DATE,
            "last_day": DATE,
            "shifts": array(ref("Shift")),
        },
    ),
    "AssignmentInput": ASSIGNMENT_INPUT,
    "HolderInput": _obj(
        ["organisation", "family_name", "given_name", "country", "role"],
        {"organisation": _s("string"), **HOLDER_FIELDS, "assignment": ref("AssignmentInput")},
    ),
    "HolderPatch": _obj([], {**HOLDER_FIELDS, "assignment": ref("AssignmentInput")}),
    "Holder": _obj(
        [
            "id",
            "organisation",
            "family_name",
            "given_name",
            "country",
            "role",
            "reference",
            "status",
            "has_photo",
            "qualifications",
            "assignment",
            "badges",
        ],
        {
            "id": _s("string"),
            "organisation": _s("string"),
            **HOLDER_FIELDS,
            "status": _s("string", enum=["active", "suspended"]),
            "has_photo": _s("boolean"),
            "assignment": {"oneOf": [ref("Assignment"), {"type": "null"}]},
            "badges": array(
                _obj(["id", "state"], {"id": _s("string"), "state": _s("string", enum=["valid", "expired", "revoked"])})
            ),
        },
    ),
    "HolderList": _obj(["total", "holders"], {"total": _s("integer"), "holders": array(ref("Holder"))}),
    "Badge": _obj(
        [
            "id",
            "holder_id",
            "zones",
            "badge_codes",
            "valid_from",
            "valid_until",
            "first_day",
            "last_day",
            "kid",
            "issued_at",
            "state",
            "revoked_reason",
        ],
        {
            "id": _s("string"),
            "holder_id": _s("string"),
            "zones": array(_s("string")),
            "badge_codes": array(_s("string")),
            "valid_from": DATETIME,
            "valid_until": DATETIME,
            "first_day": DATE,
            "last_day": DATE,
            "kid": _s("string"),
            "issued_at": DATETIME,
            "state": _s("string", enum=["valid", "expired", "revoked"]),
            "revoked_reason": {"type": ["string", "null"]},
            "token": _s("string", description="the QR code's text; desk roles only"),
            "qr_version": _s("integer", maximum=12),
        },
    ),
    "ImportReport": _obj(
        ["imported", "holder_ids", "problems"],
        {
            "imported": _s("integer"),
            "holder_ids": array(_s("string")),
            "problems": array(_obj(["line", "reason"], {"line": _s("integer"), "reason": _s("string")})),
        },
    ),
    "BatchResult": _obj(
        ["issued", "skipped"],
        {
            "issued": array(ref("Badge")),
            "skipped": array(_obj(["holder_id", "reason"], {"holder_id": _s("string"), "reason": _s("string")})),
        },
    ),
    "Decision": _obj(
        ["seq", "decided_at", "reader", "gate", "badge", "holder", "allow", "reason", "detail", "mode", "nonce"],
        {
            "seq": _s("integer"),
            "decided_at": DATETIME,
            "reader": _s("string"),
            "gate": _s("string"),
            "badge": _s("string"),
            "holder": _s("string"),
            "allow": {"type": ["boolean", "null"]},
            "reason": _s("string"),
            "detail": _s("string"),
            "mode": _s("string"),
            "nonce": {"type": ["string", "null"]},
        },
        closed=False,
    ),
}


# The leads' search filters (gateway/audit_search.py), as query parameters of the decisions feed.
DECISION_FILTERS: list[Schema] = [
    {"name": name, "in": "query", "required": False, "description": text, "schema": schema}
    for name, text, schema in [
        ("before", "cursor: only decisions with seq below this (keyset paging)", _s("integer", minimum=1)),
        ("holder", "a holder id", _s("string")),
        ("name", "part of a holder's family or given name", _s("string")),
        ("badge", "a badge id", _s("string")),
        ("organisation", "an organisation's code", _s("string")),
        ("gate", "a gate code", _s("string")),
        ("zone", "decisions at gates into this zone or its child zones", _s("string")),
        ("decision", "allowed or denied", _s("string", enum=["allow", "deny"])),
        ("reason", "a reason code", _s("string")),
        ("mode", "how it was decided", _s("string", enum=["online", "offline", "manual", "forced"])),
        ("since", "ISO date-time (UTC when naive), inclusive", _s("string")),
        ("until", "ISO date-time (UTC when naive), exclusive", _s("string")),
    ]
]


@dataclass
class Document:
    title: str
    version: str
    prefix: str
    paths: dict[str, dict[str, Schema]] = field(default_factory=dict)

    def add(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        roles: tuple[str, ...],
        responses: dict[int, Any],
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> None:
        openapi_path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", self.prefix + path)
        params: list[Schema] = [
            {"name": name, "in": "path", "required": True, "schema": _s("string")}
            for name in re.findall(r"\{(\w+)\}", openapi_path)
        ]
        params += [
            {"name": name, "in": "query", "required": False, "description": text, "schema": _s("string")}
            for name, text in (query or {}).items()
        ]
        who = ", ".join(roles) if roles else "any operator"
        op: Schema = {
            "operationId": operation_id,
            "summary": summary,
            "description": f"Roles: {who} (admin may do everything).",
            "security": [{"apiToken": []}],
            "responses": {str(code): _response(schema) for code, schema in {**responses, 401: ref("Error")}.items()},
        }
        if roles:
            op["responses"]["403"] = _response(ref("Error"))
        if params:
            op["parameters"] = params
        if body is not None:
            op["requestBody"] = {"required": True, "content": _content(body)}
        self.paths.setdefault(openapi_path, {})[method.lower()] = op

    def render(self, url_map: Map) -> Schema:
        paths = dict(self.paths)
        paths[f"{self.prefix}/decisions"] = {
            "get": {
                "operationId": "api_decisions",
                "summary": "The latest decisions, newest first (leads)",
                "description": "Roles: lead (admin may do everything).",
                "security": [{"apiToken": []}],
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": _s("integer", minimum=1, maximum=1000),
                    },
                    *DECISION_FILTERS,
                ],
                "responses": {
                    "200": {
                        **_response(array(ref("Decision"))),
                        "headers": {
                            "Link": {
                                "description": 'the next (older) page, rel="next"; absent on the last page',
                                "schema": _s("string"),
                            },
                            "X-Next-Before": {"description": "the `before` of the next page", "schema": _s("integer")},
                        },
                    },
                    "400": _response(ref("Error")),
                    "401": _response(ref("Error")),
                    "403": _response(ref("Error")),
                },
            }
        }
        paths[f"{self.prefix}/openapi.json"] = {
            "get": {
                "operationId": "openapi_document",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {}}}}},
            }
        }
        routed = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule) for rule in url_map.iter_rules()}
        missing = sorted(set(paths) - routed)
        if missing:
            raise RuntimeError(f"the API document describes unrouted paths: {', '.join(missing)}")
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version},
            "servers": [{"url": "/"}],
            "paths": dict(sorted(paths.items())),
            "components": {
                "schemas": SCHEMAS,
                "securitySchemes": {
                    "apiToken": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A per-operator API token (agw_...), made on the 'My API tokens' page "
                        "or with `python -m gateway create-api-token`.",
                    }
                },
            },
        }


def _content(body: Any) -> dict[str, Schema]:
    if isinstance(body, Binary):
        return {m: {"schema": {"type": "string", "contentMediaType": m}} for m in body.media_types}
    return {"application/json": {"schema": body}}


def _response(schema: Any) -> Schema:
    return {"description": "see schema", "content": _content(schema)}

"""The JSON API under /api/v1: the desk's operations for scripts, with per-operator API tokens.

Each operation is declared once, with `operation(...)`, which both routes it and describes it in the OpenAPI
document served at /api/v1/openapi.json: the document cannot list a route that does not exist, nor miss one.
Authentication is `Authorization: Bearer <token>` only (never the session cookie, so no CSRF here); the role
is checked on every call. Errors are `{"error": code, "detail": text}`, with `problems` for refused input.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import badges, cards, holders_csv, operators, photos
from gateway import holders as registry
from gateway.db.models import Badge, Holder, Organisation
from gateway.holders import Actor, AssignmentDraft, DeskError, HolderDraft, QualificationDraft, ShiftDraft
from gateway.web import openapi
from gateway.web.app import services
from gateway.web.auth import LoggedIn, bearer_token, csrf
from gateway.web.desk import badge_state, organisation_faces

bp = Blueprint("api", __name__, url_prefix="/api/v1")
SPEC = openapi.Document(title="Access gateway badge desk API", version="1.0.0", prefix="/api/v1")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, problems: list[Any] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.problems = status, code, detail, problems


def init_app(app: Flask) -> None:
    csrf.exempt(bp)
    app.register_blueprint(bp)


@bp.errorhandler(ApiError)
def api_error(exc: ApiError) -> Any:
    body: dict[str, Any] = {"error": exc.code, "detail": exc.detail}
    if exc.problems is not None:
        body["problems"] = exc.problems
    return jsonify(body), exc.status


@bp.before_request
def authenticate() -> None:
    if request.endpoint == "api.openapi_document":
        return
    token = bearer_token()
    svc = services()
    op = None
    if token is not None:
        with svc.sessions() as s, s.begin():
            row = operators.operator_for_token(s, token, svc.now())
            op = LoggedIn.of(row, via_token=True) if row is not None else None
    if op is None:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <API token>' (make one under My API tokens)")
    g.operator = op


def operation(
    method: str,
    path: str,
    summary: str,
    roles: tuple[str, ...],
    responses: dict[int, Any],
    body: Any = None,
    query: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Route a view and describe it in the OpenAPI document; the role check happens before the view runs."""

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if roles and g.operator.role not in roles and g.operator.role != "admin":
                raise ApiError(403, "forbidden", f"this needs the role {' or '.join(roles)}")
            return view(*args, **kwargs)

        bp.add_url_rule(path, view.__name__, checked, methods=[method])
        SPEC.add(method, path, view.__name__, summary, roles, responses, body, query)
        return checked

    return register


def actor() -> Actor:
    return Actor(g.operator.username, g.operator.id)


def _json_body(allowed: set[str], required: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object (Content-Type: application/json)")
    unknown = set(data) - allowed
    missing = required - set(data)
    problems = [f"unknown field {k!r}" for k in sorted(unknown)] + [f"missing field {k!r}" for k in sorted(missing)]
    if problems:
        raise ApiError(422, "invalid", "; ".join(problems), problems)
    return data


def _str(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ApiError(422, "invalid", f"{key} must be a string", [f"{key} must be a string"])
    return value.strip()


# --- JSON shapes -------------------------------------------------------------------------------------


def _badge_json(b: Badge, now: dt.datetime, with_token: bool) -> dict[str, Any]:
    site = services().site
    first, last = registry.local_days(site, b.not_before, b.expires_at)
    out: dict[str, Any] = {
        "id": b.id,
        "holder_id": b.holder_id,
        "zones": b.zone_codes,
        "badge_codes": [site.zones[z].on_badge if z in site.zones else z for z in b.zone_codes],
        "valid_from": b.not_before.isoformat(),
        "valid_until": b.expires_at.isoformat(),
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        "kid": b.kid,
        "issued_at": b.issued_at.isoformat(),
        "state": badge_state(b, now),
        "revoked_reason": b.revocation.reason if b.revocation is not None else None,
    }
    if with_token:
        out["token"] = b.token
        out["qr_version"] = cards.qr_version(b.token)
    return out


def _holder_json(s: Session, h: Holder, now: dt.datetime) -> dict[str, Any]:
    site = services().site
    a = registry.assignment_of(s, h.id)
    assignment = None
    if a is not None:
        first, last = registry.local_days(site, a.valid_from, a.valid_until)
        assignment = {
            "zones": a.zone_codes,
            "badge_codes": [site.zones[z].on_badge if z in site.zones else z for z in a.zone_codes],
            "first_day": first.isoformat(),
            "last_day": last.isoformat(),
            "shifts": [{"days": sh.days.split(), "starts": sh.starts, "ends": sh.ends} for sh in a.shifts],
        }
    return {
        "id": h.id,
        "organisation": h.organisation.code,
        "family_name": h.family_name,
        "given_name": h.given_name,
        "country": h.country,
        "role": h.role,
        "reference": h.reference,
        "status": h.status,
        "has_photo": h.photo is not None,
        "qualifications": [
            {"kind": q.kind, "last_day": q.expires.isoformat() if q.expires else None, "reference": q.reference}
            for q in registry.draft_of(h, site).qualifications
        ],
        "assignment": assignment,
        "badges": [{"id": b.id, "state": badge_state(b, now)} for b in sorted(h.badges, key=lambda b: b.issued_at)],
    }


def _holder_draft(data: dict[str, Any], base: HolderDraft | None) -> HolderDraft:
    problems: list[str] = []
    quals = base.qualifications if base else ()
    if "qualifications" in data:
        raw = data["qualifications"]
        if not isinstance(raw, list) or not all(isinstance(q, dict) for q in raw):
            raise ApiError(422, "invalid", "qualifications must be a list of objects", ["qualifications"])
        found = []
        for q in raw:
            extra = set(q) - {"kind", "last_day", "reference"}
            if extra or not isinstance(q.get("kind"), str):
                problems.append(f"a qualification needs a kind (and only last_day, reference): {q!r:.80}")
                continue
            last = None
            if q.get("last_day"):
                last, problem = registry.parse_date(str(q["last_day"]), f"last_day of {q['kind']}")
                if problem:
                    problems.append(problem)
            found.append(QualificationDraft(q["kind"], last, str(q.get("reference") or "")))
        quals = tuple(found)
    draft = HolderDraft(
        family_name=_str(data, "family_name", base.family_name if base else ""),
        given_name=_str(data, "given_name", base.given_name if base else ""),
        country=_str(data, "country", base.country if base else "").upper(),
        role=_str(data, "role", base.role if base else ""),
        reference=_str(data, "reference", base.reference if base else ""),
        qualifications=quals,
    )
    problems += registry.holder_problems(draft, services().site)
    if problems:
        raise ApiError(422, "invalid", "; ".join(problems), problems)
    return draft


def _assignment_draft(raw: Any) -> AssignmentDraft:
    svc = services()
    if not isinstance(raw, dict) or set(raw) - {"zones", "first_day", "last_day", "shifts"}:
        raise ApiError(422, "invalid", "assignment has zones, first_day, last_day and shifts", ["assignment"])
    problems: list[str] = []
    zones_in = raw.get("zones")
    if not isinstance(zones_in, list) or not all(isinstance(z, str) for z in zones_in):
        problems.append("assignment.zones must be a list of zone or badge codes")
        zones_in = []
    zones, zone_problems = registry.parse_zones(" ".join(zones_in), svc.site)
    problems += zone_problems
    first, p1 = registry.parse_date(str(raw.get("first_day", "")), "first_day")
    last, p2 = registry.parse_date(str(raw.get("last_day", "")), "last_day")
    problems += [p for p in (p1, p2) if p]
    shifts = []
    for sh in raw.get("shifts") or []:
        if not isinstance(sh, dict) or set(sh) != {"days", "starts", "ends"} or not isinstance(sh["days"], list):
            problems.append("a shift is {days: [mon, ...], starts: HH:MM, ends: HH:MM}")
            continue
        shifts.append(ShiftDraft(tuple(str(d) for d in sh["days"]), str(sh["starts"]), str(sh["ends"])))
    if problems or first is None or last is None:
        raise ApiError(422, "invalid", "; ".join(problems), problems)
    draft = AssignmentDraft(zones, first, last, tuple(shifts))
    problems = registry.assignment_problems(draft, svc.site, svc.instance.settings.issuer)
    if problems:
        raise ApiError(422, "invalid", "; ".join(problems), problems)
    return draft


def _get_holder(s: Session, holder_id: str) -> Holder:
    h = s.get(Holder, holder_id)
    if h is None:
        raise ApiError(404, "not_found", f"no holder {holder_id!r}")
    return h


def _get_badge(s: Session, badge_id: str) -> Badge:
    b = s.get(Badge, badge_id)
    if b is None:
        raise ApiError(404, "not_found", f"no badge {badge_id!r}")
    return b


def _get_org(s: Session, code: str) -> Organisation:
    org = registry.find_organisation(s, code)
    if org is None:
        raise ApiError(404, "not_found", f"no organisation {code!r}")
    return org


def _desk(fn: Callable[[], Any]) -> Any:
    """Run a desk operation; its refusal becomes a 422 with the problems."""
    try:
        return fn()
    except DeskError as exc:
        raise ApiError(422, "refused", str(exc), exc.problems) from None


def _reason() -> str:
    data = request.get_json(silent=True)
    if data is None:
        return ""
    if not isinstance(data, dict) or set(data) - {"reason"} or not isinstance(data.get("reason", ""), str):
        raise ApiError(422, "invalid", 'the body is {"reason": text}', ["reason"])
    return str(data.get("reason", "")).strip()[:200]


# --- the document ------------------------------------------------------------------------------------


@bp.get("/openapi.json")
def openapi_document() -> Any:
    return jsonify(SPEC.render(current_app.url_map))


# --- organisations -----------------------------------------------------------------------------------

R = openapi.ref


@operation(
    "GET",
    "/organisations",
    "List organisations and contingents",
    ("desk", "lead"),
    {200: openapi.array(R("Organisation"))},
)
def list_organisations() -> Any:
    with services().sessions() as s:
        counts = dict(s.execute(select(Holder.organisation_id, func.count()).group_by(Holder.organisation_id)).all())
        return jsonify(
            [
                {"code": o.code, "name": o.name, "kind": o.kind, "country": o.country, "holders": counts.get(o.id, 0)}
                for o in s.scalars(select(Organisation).order_by(Organisation.code))
            ]
        )


@operation(
    "POST",
    "/organisations",
    "Create an organisation",
    ("desk",),
    {201: R("Organisation"), 422: R("Error")},
    body=R("OrganisationInput"),
)
def create_organisation() -> Any:
    data = _json_body({"code", "name", "kind", "country"}, {"code", "name", "kind", "country"})
    with services().sessions() as s, s.begin():
        org = _desk(
            lambda: registry.create_organisation(
                s, _str(data, "code"), _str(data, "name"), _str(data, "kind"), _str(data, "country").upper()
            )
        )
        body = {"code": org.code, "name": org.name, "kind": org.kind, "country": org.country, "holders": 0}
    return jsonify(body), 201


# --- holders -----------------------------------------------------------------------------------------


@operation(
    "GET",
    "/holders",
    "Search holders",
    ("desk", "lead"),
    {200: R("HolderList")},
    query={
        "q": "name, reference, holder or badge id",
        "organisation": "organisation code",
        "status": "active or suspended",
        "limit": "1..500, default 50",
        "offset": "default 0",
    },
)
def list_holders() -> Any:
    svc = services()
    limit = min(max(request.args.get("limit", 50, type=int), 1), 500)
    offset = max(request.args.get("offset", 0, type=int), 0)
    status = request.args.get("status", "")
    with svc.sessions() as s:
        rows, total = registry.search(
            s,
            request.args.get("q", "")[:100],
            request.args.get("organisation", ""),
            status if status in registry.STATUSES else "",
            limit,
            offset,
        )
        return jsonify({"total": total, "holders": [_holder_json(s, h, svc.now()) for h in rows]})


@operation(
    "POST",
    "/holders",
    "Register a holder (and, optionally, their assignment)",
    ("desk",),
    {201: R("Holder"), 400: R("Error"), 422: R("Error")},
    body=R("HolderInput"),
)
def create_holder() -> Any:
    svc = services()
    fields = {
        "organisation",
        "family_name",
        "given_name",
        "country",
        "role",
        "reference",
        "qualifications",
        "assignment",
    }
    data = _json_body(fields, {"organisation", "family_name", "given_name", "country", "role"})
    draft = _holder_draft(data, None)
    assignment = _assignment_draft(data["assignment"]) if data.get("assignment") is not None else None
    now = svc.now()
    with svc.sessions() as s, s.begin():
        org = _get_org(s, _str(data, "organisation"))
        h = registry.register(s, svc.site, org, draft, now)
        if assignment is not None:
            registry.set_assignment(s, svc.site, svc.instance.settings.issuer, h, assignment, now)
        body = _holder_json(s, h, now)
    return jsonify(body), 201


@operation("GET", "/holders/<holder_id>", "One holder", ("desk", "lead"), {200: R("Holder"), 404: R("Error")})
def get_holder(holder_id: str) -> Any:
    svc = services()
    with svc.sessions() as s:
        return jsonify(_holder_json(s, _get_holder(s, holder_id), svc.now()))


@operation(
    "PATCH",
    "/holders/<holder_id>",
    "Change a holder (only the fields given; assignment: null removes nothing)",
    ("desk",),
    {200: R("Holder"), 404: R("Error"), 422: R("Error")},
    body=R("HolderPatch"),
)
def patch_holder(holder_id: str) -> Any:
    svc = services()
    data = _json_body({"family_name", "given_name", "country", "role", "reference", "qualifications", "assignment"})
    now = svc.now()
    with svc.sessions() as s, s.begin():
        h = _get_holder(s, holder_id)
        draft = _holder_draft(data, registry.draft_of(h, svc.site))
        assignment = _assignment_draft(data["assignment"]) if data.get("assignment") is not None else None
        registry.update(s, svc.site, h, draft)
        if assignment is not None:
            registry.set_assignment(s, svc.site, svc.instance.settings.issuer, h, assignment, now)
        return jsonify(_holder_json(s, h, now))


@operation(
    "PUT",
    "/holders/<holder_id>/photo",
    "Upload the holder's photo (the raw JPEG or PNG as the body)",
    ("desk",),
    {200: R("Holder"), 404: R("Error"), 422: R("Error")},
    body=openapi.binary("image/jpeg", "image/png"),
)
def put_photo(holder_id: str) -> Any:
    svc = services()
    try:
        jpeg = photos.prepare(request.get_data(cache=False))
    except photos.PhotoError as exc:
        raise ApiError(422, "bad_photo", str(exc), [str(exc)]) from None
    with svc.sessions() as s, s.begin():
        h = _get_holder(s, holder_id)
        h.photo, h.photo_type = jpeg, "image/jpeg"
        return jsonify(_holder_json(s, h, svc.now()))


@operation(
    "GET",
    "/holders/<holder_id>/photo",
    "The holder's photo (JPEG), for roles allowed to see photos",
    (),
    {200: openapi.binary("image/jpeg"), 403: R("Error"), 404: R("Error")},
)
def get_photo(holder_id: str) -> Any:
    if g.operator.role not in current_app.config["PHOTO_ROLES"]:
        raise ApiError(403, "forbidden", "your role may not see photos")
    with services().sessions() as s:
        h = _get_holder(s, holder_id)
        if h.photo is None:
            raise ApiError(404, "not_found", "no photo")
        response = Response(h.photo, mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _standing(holder_id: str, change: Callable[..., None]) -> Any:
    svc = services()
    reason = _reason()
    with svc.sessions() as s, s.begin():
        h = _get_holder(s, holder_id)
        _desk(lambda: change(s, h, reason, svc.now(), actor()))
        return jsonify(_holder_json(s, h, svc.now()))


@operation(
    "POST",
    "/holders/<holder_id>/suspend",
    "Suspend a holder: gates refuse their badges at once",
    ("desk",),
    {200: R("Holder"), 404: R("Error"), 422: R("Error")},
    body=R("Reason"),
)
def suspend_holder(holder_id: str) -> Any:
    return _standing(holder_id, registry.suspend)


@operation(
    "POST",
    "/holders/<holder_id>/reinstate",
    "Reinstate a suspended holder",
    ("desk",),
    {200: R("Holder"), 404: R("Error"), 422: R("Error")},
    body=R("Reason"),
)
def reinstate_holder(holder_id: str) -> Any:
    return _standing(holder_id, registry.reinstate)


# --- badges ------------------------------------------------------------------------------------------


@operation(
    "POST",
    "/holders/<holder_id>/badges",
    "Issue a badge from the holder's assignment (earlier ones are revoked)",
    ("desk",),
    {201: R("Badge"), 404: R("Error"), 422: R("Error")},
)
def issue_badge(holder_id: str) -> Any:
    svc = services()
    inst = svc.instance
    now = svc.now()
    with svc.sessions() as s, s.begin():
        h = _get_holder(s, holder_id)
        b = _desk(
            lambda: badges.issue_from_assignment(s, svc.site, inst.keyring, inst.settings.issuer, h, now, actor())
        )
        body = _badge_json(b, now, with_token=True)
    return jsonify(body), 201


@operation(
    "GET",
    "/badges/<badge_id>",
    "One badge (its token only for desk roles)",
    ("desk", "lead"),
    {200: R("Badge"), 404: R("Error")},
)
def get_badge(badge_id: str) -> Any:
    svc = services()
    with svc.sessions() as s:
        b = _get_badge(s, badge_id)
        return jsonify(_badge_json(b, svc.now(), with_token=g.operator.role in ("desk", "admin")))


@operation(
    "GET",
    "/badges/<badge_id>/card.pdf",
    "The badge card as PDF (ID-1, 85.6 x 54 mm)",
    ("desk",),
    {200: openapi.binary("application/pdf"), 404: R("Error"), 409: R("Error")},
)
def badge_card(badge_id: str) -> Any:
    svc = services()
    with svc.sessions() as s:
        b = _get_badge(s, badge_id)
        if b.revocation is not None:
            raise ApiError(409, "revoked", "this badge is revoked: print its replacement")
        pdf = cards.card_pdf([cards.face_for(svc.site, b, registry.assignment_of(s, b.holder_id))])
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="badge-{badge_id}.pdf"'
    return response


@operation(
    "POST",
    "/badges/<badge_id>/revoke",
    "Revoke a badge at once (revoking twice changes nothing)",
    ("desk",),
    {200: R("Badge"), 404: R("Error")},
    body=R("Reason"),
)
def revoke_badge(badge_id: str) -> Any:
    svc = services()
    reason = _reason() or "revoked through the API"
    with svc.sessions() as s, s.begin():
        _get_badge(s, badge_id)
        badges.revoke_badge(s, badge_id, reason, svc.now(), actor())
        return jsonify(_badge_json(_get_badge(s, badge_id), svc.now(), with_token=False))


@operation(
    "POST",
    "/badges/<badge_id>/reissue",
    "Replace a lost badge: the old one is revoked, a new one issued",
    ("desk",),
    {201: R("Badge"), 404: R("Error"), 422: R("Error")},
    body=R("Reason"),
)
def reissue_badge(badge_id: str) -> Any:
    svc = services()
    inst = svc.instance
    reason = _reason() or "lost"
    now = svc.now()
    with svc.sessions() as s, s.begin():
        _get_badge(s, badge_id)
        new = _desk(
            lambda: badges.reissue_badge(
                s, svc.site, inst.keyring, inst.settings.issuer, badge_id, reason, now, actor()
            )
        )
        body = _badge_json(new, now, with_token=True)
    return jsonify(body), 201


# --- contingents: import, batch issue, batch print ----------------------------------------------------


@operation(
    "POST",
    "/organisations/<code>/import",
    "Import holders from a CSV file (the body); all rows or none",
    ("desk",),
    {200: R("ImportReport"), 404: R("Error"), 422: R("ImportReport")},
    body=openapi.binary("text/csv"),
    query={"good_rows_only": "true: import the good rows of a file with bad rows (default: import nothing)"},
)
def import_csv(code: str) -> Any:
    svc = services()
    good_only = request.args.get("good_rows_only", "").lower() in ("1", "true", "yes")
    with svc.sessions() as s, s.begin():
        org = _get_org(s, code)
        try:
            checked = holders_csv.check_file(
                request.get_data(cache=False), svc.site, svc.instance.settings.issuer, s, org, org.country
            )
        except DeskError as exc:
            return jsonify({"imported": 0, "holder_ids": [], "problems": [{"line": 0, "reason": str(exc)}]}), 422
        problems = [{"line": p.line, "reason": p.reason} for p in checked.problems]
        if checked.problems and not good_only:
            return jsonify({"imported": 0, "holder_ids": [], "problems": problems}), 422
        result = _desk(
            lambda: holders_csv.import_checked(s, svc.site, org, checked, svc.now(), actor(), "api upload", good_only)
        )
    return jsonify({"imported": result.imported, "holder_ids": result.holder_ids, "problems": problems})


@operation(
    "POST",
    "/organisations/<code>/badges",
    "Issue badges to every holder of the contingent who needs one",
    ("desk",),
    {200: R("BatchResult"), 404: R("Error")},
)
def issue_contingent(code: str) -> Any:
    svc = services()
    inst = svc.instance
    now = svc.now()
    with svc.sessions() as s, s.begin():
        org = _get_org(s, code)
        result = badges.issue_for_organisation(s, svc.site, inst.keyring, inst.settings.issuer, org, now, actor())
        return jsonify(
            {
                "issued": [_badge_json(b, now, with_token=True) for b in result.issued],
                "skipped": [{"holder_id": h.id, "reason": why} for h, why in result.skipped],
            }
        )


@operation(
    "GET",
    "/organisations/<code>/cards.pdf",
    "Every current badge of the contingent on A4 sheets (10 a page)",
    ("desk",),
    {200: openapi.binary("application/pdf"), 404: R("Error")},
)
def contingent_cards(code: str) -> Any:
    svc = services()
    with svc.sessions() as s:
        faces = organisation_faces(s, svc.site, _get_org(s, code), svc.now())
    if not faces:
        raise ApiError(404, "not_found", f"{code} has no current badge: issue them first")
    response = Response(cards.sheet_pdf(faces), mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="badges-{code}.pdf"'
    return response

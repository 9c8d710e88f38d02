"""What security leads look at: alarms, the decisions as they were logged, search over the whole audit, each
holder's trail, each gate's traffic, exports of any filtered view, and the dashboard's charts."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, g, jsonify, render_template, request, stream_with_context, url_for
from sqlalchemy import case, func, select

from gateway import alarms, audit_search, dashboards, exports, plots
from gateway.audit_search import Filter, FilterError
from gateway.db.models import AuditEntry, Holder, Organisation, Position
from gateway.web.app import services
from gateway.web.auth import login_required

bp = Blueprint("oversight", __name__)
PAGE = 50


def _recent(limit: int) -> list[AuditEntry]:
    with services().sessions() as s:
        return list(
            s.scalars(
                select(AuditEntry).where(AuditEntry.kind == "decision").order_by(AuditEntry.seq.desc()).limit(limit)
            )
        )


def recent_alarms(limit: int) -> list[AuditEntry]:
    with services().sessions() as s:
        return alarms.recent_alarms(s, limit)


@bp.get("/")
@login_required("lead", "desk")
def index() -> Any:
    with services().sessions() as s:
        total = s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.kind == "decision")) or 0
        denied = (
            s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.kind == "decision", AuditEntry.allow.is_(False))
            )
            or 0
        )
    return render_template(
        "decisions.html",
        rows=_recent(100),
        total=total,
        denied=denied,
        site=services().site,
        alarms=recent_alarms(20),
    )


# --- search, trail, gate traffic --------------------------------------------------------------------------


def _filter(**fixed: str) -> Filter:
    """The request's filter; a bad argument is a 400 naming it."""
    try:
        return Filter.from_args(request.args, services().site, **fixed)
    except FilterError as exc:
        abort(400, description=str(exc))


def _before() -> int | None:
    before = request.args.get("before", type=int)
    if "before" in request.args and before is None:
        abort(400, description="before must be an audit sequence number")
    return before


def _page(f: Filter) -> audit_search.Page:
    svc = services()
    with svc.sessions() as s:
        return audit_search.search(s, svc.site, f, _before(), PAGE)


def _search_kind() -> str:
    """The page searches decisions unless told otherwise; "any" searches every kind of entry."""
    kind = request.args.get("kind", "decision")
    return "" if kind == "any" else kind


@bp.get("/leads/search")
@login_required("lead")
def search() -> Any:
    f = _filter(kind=_search_kind())
    page = _page(f)
    args = f.view_args()
    return render_template(
        "oversight/search.html",
        f=f,
        page=page,
        args=args,
        next_url=_next_url("oversight.search", args, page),
        site=services().site,
        reasons=_known_reasons(),
        organisations=_organisations(),
    )


@bp.get("/leads/trail/<holder_id>")
@login_required("lead")
def trail(holder_id: str) -> Any:
    svc = services()
    with svc.sessions() as s:
        row = s.execute(
            select(Holder.id, Holder.family_name, Holder.given_name, Holder.role, Holder.status, Organisation.name)
            .join(Organisation)
            .where(Holder.id == holder_id)
        ).first()
        position = s.get(Position, holder_id)
    if row is None:
        abort(404)
    f = _filter(holder=holder_id)
    page = _page(f)
    return render_template(
        "oversight/trail.html",
        holder=row,
        position=position,
        f=f,
        page=page,
        args=f.view_args(),
        next_url=_next_url("oversight.trail", {**f.view_args(), "holder_id": holder_id}, page),
    )


@bp.get("/leads/traffic")
@login_required("lead")
def traffic() -> Any:
    svc = services()
    since = svc.now() - dt.timedelta(hours=24)
    a = AuditEntry
    with svc.sessions() as s:
        rows = s.execute(
            select(
                a.gate,
                func.count(),
                func.sum(case((a.allow.is_(False), 1), else_=0)),
            )
            .where(a.kind == "decision", a.at >= since)
            .group_by(a.gate)
        ).all()
    counts = {gate: (int(total), int(denied or 0)) for gate, total, denied in rows}
    return render_template("oversight/traffic.html", site=svc.site, counts=counts)


@bp.get("/leads/traffic/<gate>")
@login_required("lead")
def gate_traffic(gate: str) -> Any:
    svc = services()
    if gate not in svc.site.gates:
        abort(404)
    f = _filter(gate=gate)
    page = _page(f)
    since = svc.now() - dt.timedelta(hours=1)
    a = AuditEntry
    with svc.sessions() as s:
        hour = s.execute(
            select(a.kind, a.allow, a.reason, func.count())
            .where(a.gate == gate, a.at >= since)
            .group_by(a.kind, a.allow, a.reason)
        ).all()
    summary = {"granted": 0, "denied": 0, "passages": 0, "alarms": 0}
    for kind, allow, reason, count in hour:
        if kind == "decision":
            summary["granted" if allow else "denied"] += count
        elif kind == "gate_event" and reason == "passage":
            summary["passages"] += count
        elif alarms.is_alarm(kind, reason):
            summary["alarms"] += count
    return render_template(
        "oversight/gate_traffic.html",
        gate=svc.site.gates[gate],
        summary=summary,
        f=f,
        page=page,
        args=f.view_args(),
        next_url=_next_url("oversight.gate_traffic", {**f.view_args(), "gate": gate}, page),
    )


def _next_url(endpoint: str, args: dict[str, str], page: audit_search.Page) -> str | None:
    if page.next_cursor is None:
        return None
    values: dict[str, Any] = {**args, "before": page.next_cursor}
    return url_for(endpoint, **values)


def _known_reasons() -> list[str]:
    from gateway.contract import GATE_EVENT_KINDS
    from gateway.core import Reason

    return sorted({r.value for r in Reason} | set(GATE_EVENT_KINDS))


def _organisations() -> list[tuple[str, str]]:
    with services().sessions() as s:
        return [(c, n) for c, n in s.execute(select(Organisation.code, Organisation.name).order_by(Organisation.code))]


# --- exports -----------------------------------------------------------------------------------------------


@bp.post("/leads/search/export.<fmt>")
@login_required("lead")
def export(fmt: str) -> Any:
    """Any filtered view (the query string's filter), streamed; the export is audited (who, which filter) before
    its first row leaves. A POST, with the CSRF token: writing that audit entry is an action, not a read."""
    if fmt not in exports.FORMATS:
        abort(404)
    svc = services()
    f = _filter(kind=_search_kind())
    with svc.sessions() as s, s.begin():
        seq = exports.record(s, g.operator.username, fmt, f.as_args(), svc.now())
    select_list = exports.columns(fmt, svc.engine.dialect.name)
    body = exports.chunks(
        fmt, audit_search.batches(svc.sessions, svc.site, f, columns=select_list, driver_rows=fmt == "csv")
    )
    response = Response(stream_with_context(body), mimetype=exports.FORMATS[fmt].split(";")[0])
    if fmt == "csv":
        response.headers["Content-Type"] = exports.FORMATS["csv"]
    stamp = svc.now().strftime("%Y%m%d-%H%M%S")
    response.headers["Content-Disposition"] = f'attachment; filename="audit-{stamp}-{seq}.{fmt}"'
    response.headers["X-Audit-Seq"] = str(seq)  # the export's own audit entry
    return response


# --- dashboard ---------------------------------------------------------------------------------------------


@bp.get("/leads/dashboard")
@login_required("lead")
def dashboard() -> Any:
    svc = services()
    f = _filter(kind="decision")
    until = f.until or svc.now()
    since = f.since or until - dt.timedelta(hours=24)
    if since >= until:
        abort(400, description="since must be earlier than until")
    f = dataclasses.replace(f, since=since, until=until)
    zones = _zone_scope(f.zone)
    with svc.sessions() as s:
        per_gate = dashboards.decisions_per_gate(s, svc.site, f, since, until)
        denials = dashboards.denials_by_reason(s, svc.site, f, since, until)
        levels = dashboards.occupancy(s, svc.site, since, until, zones)
    occupied = {z: v for z, v in levels.series.items() if any(v)}
    charts = {
        "per_gate": plots.line_chart(
            "Decisions per gate", per_gate.times, per_gate.series, chart_id="chart-decisions-per-gate"
        ),
        "denials": plots.bar_chart("Denials by reason", denials, chart_id="chart-denials-by-reason"),
        "occupancy": plots.line_chart(
            "Holders in each zone", levels.times, occupied, chart_id="chart-occupancy", step=True
        ),
    }
    return render_template(
        "oversight/dashboard.html",
        f=f,
        charts=charts,
        site=svc.site,
        organisations=_organisations(),
        bucket=dashboards.bucket_for(since, until),
    )


def _zone_scope(zone: str) -> list[str] | None:
    """The zones the occupancy chart shows: a zone and its children when one is chosen, else every zone."""
    if not zone:
        return None
    site = services().site
    return [code for code in site.zones if code == zone or zone in site.ancestors(code)]


# --- JSON API ----------------------------------------------------------------------------------------------


@bp.get("/api/v1/decisions")
@login_required("lead")
def api_decisions() -> Any:
    """Decisions, newest first, with the search's filters; the next page's cursor is in the Link header."""
    limit = min(max(request.args.get("limit", 100, type=int), 1), 1000)
    svc = services()
    before = request.args.get("before", type=int)
    try:
        f = Filter.from_args(request.args, svc.site, kind="decision")
        if "before" in request.args and before is None:
            raise FilterError("before must be an audit sequence number")
    except FilterError as exc:
        return jsonify({"error": "bad_filter", "detail": str(exc)}), 400
    with svc.sessions() as s:
        page = audit_search.search(s, svc.site, f, before, limit)
    response = jsonify([_decision_json(r) for r in page.rows])
    if page.next_cursor is not None:
        args = {k: v for k, v in f.as_args().items() if k != "kind"}
        query = urlencode({**args, "limit": str(limit), "before": str(page.next_cursor)})
        response.headers["Link"] = f'<{request.path}?{query}>; rel="next"'
        response.headers["X-Next-Before"] = str(page.next_cursor)
    return response


def _decision_json(r: Any) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "decided_at": r.at.isoformat(timespec="milliseconds"),
        "reader": r.reader,
        "gate": r.gate,
        "badge": r.badge_id,
        "holder": r.holder_id,
        "allow": r.allow,
        "reason": r.reason,
        "detail": r.detail,
        "mode": r.mode,
        "nonce": r.ref,
    }

"""The leads' live monitor: decisions and alarms as they are logged, and acknowledging alarms.

The stream (server-sent events) tails the audit by seq, polling the database every half second. Decisions are
written by the decision processes, not by this one, so the database is the only place every process agrees on;
appends are serialised by the audit's chain lock, so entries become visible in seq order and none is skipped.
Each stream lives at most MONITOR_STREAM_SECONDS and then ends; the browser's EventSource reconnects with the
Last-Event-ID header and goes on where it was, so a stream never holds a server thread for ever.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from flask import Blueprint, Response, current_app, flash, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gateway import alarms
from gateway.db.models import AuditEntry
from gateway.web.app import services
from gateway.web.auth import login_required
from gateway.web.personal import Disclosure, for_operator, holder_labels

bp = Blueprint("monitor", __name__)

POLL_SECONDS = 0.5
HEARTBEAT_POLLS = 30  # a comment line every ~15 s of silence: proxies keep the stream open, dead clients show up
BATCH = 200  # entries read per poll at most; a backlog is sent over the next polls
RECENT = 50  # entries shown when the page opens


def _watched() -> ColumnElement[bool]:
    return or_(AuditEntry.kind == "decision", AuditEntry.kind == alarms.ACK_KIND, alarms.alarm_clause())


def _head(session: Session) -> int:
    return session.scalar(select(func.max(AuditEntry.seq))) or 0


def _event(row: AuditEntry, labels: dict[str, str]) -> dict[str, Any]:
    """What the page needs of one entry (never more: the stream goes to every lead's browser)."""
    base = {"seq": row.seq, "at": row.at.strftime("%Y-%m-%d %H:%M:%S"), "gate": row.gate, "reader": row.reader}
    if row.kind == alarms.ACK_KIND:
        return {**base, "type": "ack", "alarm": int(row.ref or 0), "operator": row.operator, "detail": row.detail}
    if alarms.is_alarm(row.kind, row.reason):
        return {**base, "type": "alarm", "alarm": row.reason, "detail": row.detail}
    return {
        **base,
        "type": "decision",
        "badge": row.badge_id,
        "holder": labels.get(row.holder_id, row.holder_id),
        "allow": bool(row.allow),
        "reason": row.reason,
        "mode": row.mode,
    }


def _events(session: Session, rows: Sequence[AuditEntry], seen: Disclosure) -> list[dict[str, Any]]:
    labels = holder_labels(session, (r.holder_id for r in rows if r.kind == "decision"), seen)
    return [_event(r, labels) for r in rows]


def read_since(session: Session, last: int, seen: Disclosure) -> tuple[list[dict[str, Any]], int]:
    """Watched entries after seq `last`, and the seq to go on from (the head when nothing was left over)."""
    head = _head(session)
    if head <= last:
        return [], last
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.seq > last, AuditEntry.seq <= head, _watched())
        .order_by(AuditEntry.seq)
        .limit(BATCH)
    ).all()
    return _events(session, rows, seen), rows[-1].seq if len(rows) == BATCH else head


def _sse(event: dict[str, Any]) -> str:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def tail(sessions: sessionmaker[Session], after: int, seen: Disclosure, polls: int) -> Iterator[str]:
    """The stream: each new watched entry as one event, for `polls` polls; then it ends (the client reconnects)."""
    yield "retry: 2000\n\n"
    last, quiet = after, 0
    for _ in range(polls):
        with sessions() as s:
            events, last = read_since(s, last, seen)
        for event in events:
            yield _sse(event)
        quiet = 0 if events else quiet + 1
        if quiet >= HEARTBEAT_POLLS:
            quiet = 0
            yield ": still here\n\n"
        time.sleep(POLL_SECONDS)


@bp.get("/monitor")
@login_required("lead")
def page() -> Any:
    seen = for_operator()
    with services().sessions() as s:
        head = _head(s)  # one snapshot: the page shows up to `head`, the stream goes on from there
        open_alarms = _events(s, alarms.unacknowledged(s, 500, up_to=head), seen)
        recent = s.scalars(
            select(AuditEntry).where(_watched(), AuditEntry.seq <= head).order_by(AuditEntry.seq.desc()).limit(RECENT)
        ).all()
        events = _events(s, recent, seen)
        acks = alarms.acknowledgements(s, [e["seq"] for e in events if e["type"] == "alarm"])
    acked = {seq: ack.operator for seq, ack in acks.items()}
    return render_template("monitor.html", head=head, open_alarms=open_alarms, events=events, acked=acked)


@bp.get("/monitor/monitor.js")
@login_required("lead")
def script() -> Any:
    # A file rather than an inline script, so that a strict Content-Security-Policy can allow 'self' only.
    return Response(render_template("monitor.js"), mimetype="text/javascript")


@bp.get("/monitor/stream")
@login_required("lead")
def stream() -> Any:
    start = request.headers.get("Last-Event-ID", "") or request.args.get("after", "")
    svc = services()
    with svc.sessions() as s:
        head = _head(s)
    # Never past the head: a Last-Event-ID from before a database restore would otherwise wait for ever.
    after = min(int(start), head) if start.isdigit() else head
    polls = max(int(current_app.config["MONITOR_STREAM_SECONDS"] / POLL_SECONDS), 1)
    # No request context is kept in the generator: it needs only the session factory and what this lead may see.
    body = tail(svc.sessions, after, for_operator(), polls)
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},  # no proxy buffering of the stream
    )


@bp.post("/monitor/alarms/<int:seq>/ack")
@login_required("lead")
def acknowledge(seq: int) -> Any:
    svc = services()
    wants_json = request.accept_mimetypes.best == "application/json"
    try:
        with svc.sessions() as s, s.begin():
            ack = alarms.acknowledge(s, seq, g.operator.username, svc.now(), request.form.get("note", "")[:300])
            ack_seq = ack.seq
    except alarms.AlarmError as exc:
        if wants_json:
            return jsonify({"error": "not_acknowledged", "detail": str(exc)}), 409
        flash(str(exc), "error")
        return redirect(url_for("monitor.page"))
    if wants_json:
        return jsonify({"alarm": seq, "ack": ack_seq, "operator": g.operator.username})
    flash(f"Alarm {seq} acknowledged.")
    return redirect(url_for("monitor.page"))

"""The operations room's status page (leads and administrators): decision workers, readers, gates and bridges.

Sources: decision workers' heartbeats (gateway/heartbeat.py); readers' live retained statuses when the web has
a status link to the broker (gateway/status_board.py), else the last change the audit recorded; each gate's
controller link, last event and recent alarms from the gate events in the audit; bridges' live retained
statuses (online or offline, last heartbeat, outbox length, controller link per gate) from the same status link.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, render_template
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import heartbeat
from gateway.db.models import AuditEntry
from gateway.site import Site
from gateway.status_board import Heard, HeardBridge
from gateway.web.app import services
from gateway.web.auth import login_required
from gateway.web.health import status_board

bp = Blueprint("operations", __name__)

READER_SILENT_AFTER_S = 30.0  # three missed heartbeats at the readers' default 10 s
BRIDGE_SILENT_AFTER_S = 20.0  # three missed heartbeats at the bridges' default 5 s, and some slack
ALARM_KINDS = ("door_forced", "door_held_open", "tamper")
CONTROLLER_KINDS = ("controller_online", "controller_offline")
ALARM_WINDOW = dt.timedelta(hours=24)


@dataclass(frozen=True)
class ReaderRow:
    code: str
    gate: str
    side: str
    state: str  # online, offline, silent (no heartbeat lately), unknown (never heard)
    source: str  # live (the web's status link) or audit (last change recorded)
    last_heard: dt.datetime | None
    frames: int | None
    decodes: int | None
    decisions: int | None
    offline_queue: int | None
    in_site: bool = True


@dataclass(frozen=True)
class GateRow:
    code: str
    name: str
    controller: str  # "bus/address", or "" for a gate without a controller
    link: str  # up, down, unknown
    link_since: dt.datetime | None
    last_event: str
    last_event_at: dt.datetime | None
    alarms: int  # in ALARM_WINDOW


@dataclass(frozen=True)
class BridgeRow:
    code: str  # the bridge's broker account (bridge.<GATE>, bridge-bus.<BUS>)
    state: str  # online, offline, silent (no heartbeat lately)
    last_heard: dt.datetime
    age_s: int  # seconds since its last status was written (by its own clock)
    outbox: int
    controllers: list[tuple[str, str]]  # (gate, up|down), in the bridge's order


def bridge_rows(live: dict[str, HeardBridge], now: dt.datetime) -> list[BridgeRow]:
    rows = []
    for code, heard in sorted(live.items()):
        status = heard.status
        at = dt.datetime.fromtimestamp(status.sent_ms / 1000, dt.UTC)
        age = (now - at).total_seconds()
        fresh = age <= BRIDGE_SILENT_AFTER_S
        state = "offline" if status.state == "offline" else ("online" if fresh else "silent")
        rows.append(BridgeRow(code, state, at, max(0, int(age)), status.outbox, list(status.controllers.items())))
    return rows


_NO_COUNTS = (None, None, None, None)  # frames, decodes, decisions, offline queue: only live statuses have them


def _latest(session: Session, kind: str, group: Any, reasons: tuple[str, ...] = ()) -> dict[str, AuditEntry]:
    """The latest audit entry of `kind` (with one of `reasons`) for each value of the `group` column."""
    newest = select(func.max(AuditEntry.seq)).where(AuditEntry.kind == kind)
    if reasons:
        newest = newest.where(AuditEntry.reason.in_(reasons))
    rows = session.scalars(select(AuditEntry).where(AuditEntry.seq.in_(newest.group_by(group))))
    return {getattr(row, group.key): row for row in rows}


def _from_live(code: str, gate: str, side: str, heard: Heard, now: dt.datetime, in_site: bool) -> ReaderRow:
    status = heard.status
    # Judged on this server's clock (when a live status arrived): the reader's own may be minutes off. A retained
    # status handed over on subscribing is as old as the reader said it was.
    at_ms = heard.received_ms if heard.live else status.at_ms
    at = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
    if status.state == "offline":
        state = "offline"
    else:
        state = "online" if (now - at).total_seconds() <= READER_SILENT_AFTER_S else "silent"
    return ReaderRow(
        code,
        gate,
        side,
        state,
        "live",
        at,
        status.frames,
        status.decodes,
        status.decisions,
        status.offline_queue,
        in_site,
    )


def reader_rows(session: Session, site: Site, live: dict[str, Heard] | None, now: dt.datetime) -> list[ReaderRow]:
    changes = _latest(session, "reader_status", AuditEntry.reader)
    rows = []
    for reader in site.readers.values():
        heard = live.get(reader.code) if live is not None else None
        change = changes.get(reader.code)
        if heard is not None:
            rows.append(_from_live(reader.code, reader.gate, reader.side, heard, now, True))
        elif change is not None:
            state = change.reason.removeprefix("reader_")
            rows.append(ReaderRow(reader.code, reader.gate, reader.side, state, "audit", change.at, *_NO_COUNTS))
        else:
            rows.append(ReaderRow(reader.code, reader.gate, reader.side, "unknown", "", None, *_NO_COUNTS))
    for code, heard in sorted((live or {}).items()):
        if code not in site.readers:  # a reader the site file does not know is worth seeing
            rows.append(_from_live(code, "", "", heard, now, False))
    return rows


def gate_rows(session: Session, site: Site, now: dt.datetime) -> list[GateRow]:
    links = _latest(session, "gate_event", AuditEntry.gate, CONTROLLER_KINDS)
    last = _latest(session, "gate_event", AuditEntry.gate)
    alarms = dict(
        session.execute(
            select(AuditEntry.gate, func.count())
            .where(AuditEntry.kind == "gate_event", AuditEntry.reason.in_(ALARM_KINDS))
            .where(AuditEntry.at >= now - ALARM_WINDOW)
            .group_by(AuditEntry.gate)
        ).all()
    )
    rows = []
    for gate in site.gates.values():
        link = links.get(gate.code)
        event = last.get(gate.code)
        controller = f"{gate.controller.bus}/{gate.controller.address}" if gate.controller is not None else ""
        rows.append(
            GateRow(
                gate.code,
                gate.name,
                controller,
                {"controller_online": "up", "controller_offline": "down"}.get(link.reason, "unknown")
                if link
                else "unknown",
                link.at if link else None,
                event.reason if event else "",
                event.at if event else None,
                int(alarms.get(gate.code, 0)),
            )
        )
    return rows


@bp.get("/operations")
@login_required("lead")
def operations() -> Any:
    svc = services()
    now = svc.now()
    board = status_board()
    stale_after_s = float(current_app.config.get("DECISION_HEARTBEAT_STALE_S", heartbeat.STALE_AFTER_S))
    with svc.sessions() as s:
        workers = heartbeat.read_beats(s)
        readers = reader_rows(s, svc.site, board.readers() if board is not None else None, now)
        gates = gate_rows(s, svc.site, now)
    bridges = bridge_rows(board.bridges(), now) if board is not None else []
    return render_template(
        "operations.html",
        now=now,
        workers=[(w, w.alive(now, stale_after_s)) for w in workers],
        workers_alive=sum(w.alive(now, stale_after_s) for w in workers),
        readers=readers,
        gates=gates,
        bridges=bridges,
        bridges_online=sum(b.state == "online" for b in bridges),
        board=board,
        readers_online=sum(r.state == "online" for r in readers),
        links_up=sum(g.link == "up" for g in gates),
        controlled=sum(bool(g.controller) for g in gates),
        alarm_window_h=int(ALARM_WINDOW.total_seconds() // 3600),
    )

"""Health for load balancers and Prometheus: /readyz (able to serve) and /metrics; /healthz is in keys.py.

- /healthz (gateway/web/keys.py, older than this module): no login, no database: the process answers.
- /readyz: no login; 200 when every check passes, else 503; both with JSON naming each check and why it
  failed: the database answers, the keys load, a decision worker's heartbeat is fresh (gateway/heartbeat.py),
  the broker is reachable (a live worker's link is up, and the web's own status link when it has one).
  It says which part is missing, nothing more (no versions, paths or addresses).
- /metrics: Prometheus text, for `Authorization: Bearer <API token>` of an administrator or a lead only
  (Prometheus sends it from `authorization: credentials_file:`). The decision processes, readers and bridges
  serve theirs on their own --metrics-port, which should be reachable from the monitoring network only.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

from gateway import heartbeat, operators
from gateway.instance import InstanceError
from gateway.mqttlink import BrokerAddress
from gateway.status_board import StatusBoard
from gateway.web.app import services

bp = Blueprint("health", __name__)

METRICS_ROLES = ("admin", "lead")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def status_board() -> StatusBoard | None:
    board: StatusBoard | None = current_app.extensions.get("accessgw_status_board")
    return board


def readiness(now: dt.datetime, stale_after_s: float, board: StatusBoard | None) -> dict[str, Check]:
    svc = services()
    checks: dict[str, Check] = {}
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = Check(True, "answers")
    except Exception as exc:  # any driver error means the same to a load balancer
        checks["database"] = Check(False, f"unreachable ({type(exc).__name__})")
    try:
        keyring = svc.instance.keyring
        checks["keys"] = Check(True, f"badge key {keyring.badge_kid}, decision key {keyring.decision_kid}")
    except (InstanceError, OSError, ValueError) as exc:
        checks["keys"] = Check(False, f"not loaded ({type(exc).__name__})")
    beats: list[heartbeat.WorkerBeat] = []
    if checks["database"].ok:
        try:
            with svc.sessions() as s:
                beats = heartbeat.read_beats(s)
        except Exception as exc:
            checks["database"] = Check(False, f"heartbeats unreadable ({type(exc).__name__})")
    alive = [b for b in beats if b.alive(now, stale_after_s)]
    if not checks["database"].ok:
        checks["decision_service"] = Check(False, "unknown: the database is unreachable")
    elif alive:
        checks["decision_service"] = Check(True, f"{len(alive)} worker(s) alive: {', '.join(b.worker for b in alive)}")
    elif beats:
        checks["decision_service"] = Check(False, f"no heartbeat in the last {stale_after_s:.0f} s")
    else:
        checks["decision_service"] = Check(False, "no decision worker has ever started")
    linked = [b for b in alive if b.broker]
    if board is not None and not board.connected:
        checks["broker"] = Check(False, "the web's status link to the broker is down")
    elif linked:
        checks["broker"] = Check(True, f"reached by worker(s) {', '.join(b.worker for b in linked)}")
    elif board is not None and not alive:
        checks["broker"] = Check(True, "reached by the web's status link")
    else:
        checks["broker"] = Check(False, "no live decision worker is connected to it")
    return checks


def _stale_after_s() -> float:
    return float(current_app.config.get("DECISION_HEARTBEAT_STALE_S", heartbeat.STALE_AFTER_S))


@bp.get("/readyz")
def readyz() -> Any:
    checks = readiness(services().now(), _stale_after_s(), status_board())
    failing = [name for name, c in checks.items() if not c.ok]
    response = jsonify(
        {
            "status": "not ready" if failing else "ready",
            "failing": failing,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
        }
    )
    response.status_code = 503 if failing else 200
    response.headers["Cache-Control"] = "no-store"
    return response


def _scraper_role() -> str | None:
    """The role of the operator whose API token came with the request, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    svc = services()
    with svc.sessions() as s, s.begin():
        operator = operators.operator_for_token(s, token.strip(), svc.now())
        return operator.role if operator is not None else None


@bp.get("/metrics")
def metrics() -> Any:
    role = _scraper_role()
    if role is None:
        response = jsonify({"error": "unauthorized", "detail": "send 'Authorization: Bearer <API token>'"})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="accessgw-metrics"'
        return response
    if role not in METRICS_ROLES:
        return jsonify({"error": "forbidden", "detail": "an administrator's or a lead's token is needed"}), 403
    registry: CollectorRegistry = current_app.extensions["accessgw_metrics"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class _ReadinessCollector(Collector):
    """`accessgw_ready_check{check}`: each readiness check, 1 passing or 0, evaluated at scrape time."""

    def __init__(self, evaluate: Callable[[], dict[str, Check]]) -> None:
        self.evaluate = evaluate

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("accessgw_ready_check", "1 while the readiness check passes.", labels=["check"])

    def describe(self) -> Iterable[Metric]:
        # Registering must not evaluate the checks: there is no request (nor app) context then.
        yield self._family()

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for name, check in self.evaluate().items():
            family.add_metric([name], 1.0 if check.ok else 0.0)
        yield family


def init_app(app: Flask) -> None:
    """Register the health views, the web's metrics, and (with BROKER_ADDRESS configured) the status board."""
    registry = CollectorRegistry(auto_describe=True)
    requests_total = Counter(
        "accessgw_http_requests",
        "Web requests answered, by view and status code.",
        ["endpoint", "method", "status"],
        registry=registry,
    )
    registry.register(_ReadinessCollector(lambda: readiness(services().now(), _stale_after_s(), status_board())))
    app.extensions["accessgw_metrics"] = registry
    address: BrokerAddress | None = app.config.get("BROKER_ADDRESS")
    if address is not None:
        board = StatusBoard(address, lambda: int(time.time() * 1000))
        board.start()
        app.extensions["accessgw_status_board"] = board

    @app.after_request
    def count_request(response: Response) -> Response:
        # The endpoint (view name), never the path: paths carry holder and badge ids.
        endpoint = request.url_rule.endpoint if request.url_rule is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"  # clients may send any word
        requests_total.labels(endpoint, method, str(response.status_code)).inc()
        return response

    app.register_blueprint(bp)

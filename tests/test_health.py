"""/healthz, /readyz and the web's /metrics, on SQLite and PostgreSQL, with a real decision process over Mosquitto
for the decision-service and broker checks."""

from __future__ import annotations

import datetime as dt
import gc
import os
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from gateway.broker_setup import GATEWAY_USER, BrokerFiles, free_port
from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import Operator
from gateway.decision_process import DecisionProcess
from gateway.heartbeat import Heartbeat
from gateway.instance import create_instance
from gateway.mqttlink import BrokerAddress
from gateway.operators import new_api_token
from gateway.site import Site
from gateway.web import create_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(instance) -> FlaskClient:  # type: ignore[no-untyped-def]
    return create_app(instance.folder).test_client()


def test_healthz_answers_without_login_or_database(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_names_the_missing_decision_service(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not ready"
    assert body["failing"] == ["decision_service", "broker"]
    assert body["checks"]["database"]["ok"] and body["checks"]["keys"]["ok"]
    assert body["checks"]["decision_service"]["detail"] == "no decision worker has ever started"


def test_readyz_follows_a_real_decision_process(client: FlaskClient, instance, broker: BrokerFiles) -> None:  # type: ignore[no-untyped-def]
    address = BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER))
    process = DecisionProcess(instance, address, "h1")
    process.start()
    try:
        assert gc.get_freeze_count() > 0  # start-up's objects are out of the collector's way (long pauses)
        response = client.get("/readyz")
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["status"] == "ready" and body["failing"] == []
        assert body["checks"]["decision_service"]["detail"] == "1 worker(s) alive: h1"
        assert body["checks"]["broker"]["ok"]
    finally:
        process.stop()
    assert gc.get_freeze_count() == 0
    stopped = client.get("/readyz")
    assert stopped.status_code == 503
    assert stopped.get_json()["failing"] == ["decision_service", "broker"]


def test_a_stale_heartbeat_is_not_alive(client: FlaskClient, instance) -> None:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    Heartbeat(sessions, "h2", lambda: True, lambda: long_ago).beat()
    body = client.get("/readyz").get_json()
    assert body["failing"] == ["decision_service", "broker"]
    assert body["checks"]["decision_service"]["detail"] == "no heartbeat in the last 15 s"
    Heartbeat(sessions, "h2", lambda: True, lambda: dt.datetime.now(dt.UTC)).beat()
    assert client.get("/readyz").status_code == 200


def test_a_worker_cut_from_the_broker_fails_the_broker_check(client: FlaskClient, instance) -> None:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    Heartbeat(sessions, "h3", lambda: False, lambda: dt.datetime.now(dt.UTC)).beat()
    body = client.get("/readyz").get_json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["detail"] == "no live decision worker is connected to it"


def test_readyz_fails_on_unloadable_keys(client: FlaskClient, instance) -> None:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    Heartbeat(sessions, "h4", lambda: True, lambda: dt.datetime.now(dt.UTC)).beat()
    assert client.get("/readyz").status_code == 200
    key = instance.folder / "keys" / "decision.pem"
    os.chmod(key, 0o644)  # a world-readable signing key: the gateway refuses it
    os.utime(instance.folder / "keys", ns=(1, 1))  # the web re-reads its keys when the folder's time changes
    body = client.get("/readyz").get_json()
    assert body["failing"] == ["keys"]
    assert body["checks"]["keys"]["detail"] == "not loaded (InstanceError)"
    assert "decision.pem" not in str(body)  # names the check, not the file layout


def test_readyz_fails_when_the_database_is_unreachable(tmp_path: Path, site: Site) -> None:
    folder = tmp_path / "unreachable"
    nobody = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"  # a port where no server listens
    create_instance(folder, nobody, ROOT / "zones.yaml", site.code)
    client = create_app(folder).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["failing"] == ["database", "decision_service", "broker"]
    assert body["checks"]["database"]["detail"] == "unreachable (OperationalError)"
    assert body["checks"]["decision_service"]["detail"] == "unknown: the database is unreachable"
    assert body["checks"]["keys"]["ok"]
    assert client.get("/healthz").status_code == 200  # alive all the same: restarting the web would not help


@pytest.fixture
def tokens(instance) -> dict[str, str]:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    out = {}
    for name, role in (("admin9", "admin"), ("lead9", "lead"), ("desk9", "desk")):
        add_operator(instance, name, role, f"{name}-password")
        with sessions() as s, s.begin():
            op = s.scalar(select(Operator).where(Operator.username == name))
            assert op is not None
            out[role], _ = new_api_token(s, op, "prometheus", dt.datetime.now(dt.UTC))
    return out


def test_web_metrics_need_an_admin_or_lead_token(client: FlaskClient, tokens: dict[str, str]) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {tokens['desk']}"}).status_code == 403
    for role in ("admin", "lead"):
        assert client.get("/metrics", headers={"Authorization": f"Bearer {tokens[role]}"}).status_code == 200


def test_web_metrics_count_requests_and_report_readiness(client: FlaskClient, tokens: dict[str, str]) -> None:
    client.get("/healthz")
    client.get("/healthz")
    client.open("/healthz", method="BREW")  # an unknown method does not become a label of its own
    response = client.get("/metrics", headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }
    ok = frozenset({("endpoint", "keys.healthz"), ("method", "GET"), ("status", "200")})
    assert samples[("accessgw_http_requests_total", ok)] == 2
    brewed = frozenset({("endpoint", "unmatched"), ("method", "other"), ("status", "405")})
    assert samples[("accessgw_http_requests_total", brewed)] == 1
    assert samples[("accessgw_ready_check", frozenset({("check", "database")}))] == 1
    assert samples[("accessgw_ready_check", frozenset({("check", "decision_service")}))] == 0

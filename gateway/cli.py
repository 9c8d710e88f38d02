"""`python -m gateway`: set up an instance, run the web side and the decision service, desk commands."""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import signal
import threading
from pathlib import Path

import click
from sqlalchemy import select

from gateway import badges
from gateway.broker_setup import write_broker_files
from gateway.db.engine import make_engine, session_factory, upgrade
from gateway.db.models import GateRecord, Holder, Operator, ReaderRecord
from gateway.instance import Instance, InstanceError, create_instance, load_instance
from gateway.site import Site, SiteError, load_site

DEFAULT_INSTANCE = "instance"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _instance(path: str) -> Instance:
    try:
        return load_instance(Path(path))
    except InstanceError as exc:
        raise click.ClickException(str(exc)) from None


def _site(path: Path) -> Site:
    try:
        return load_site(path)
    except SiteError as exc:
        raise click.ClickException(str(exc)) from None


instance_option = click.option(
    "--instance",
    "instance_path",
    default=lambda: os.environ.get("ACCESSGW_INSTANCE", DEFAULT_INSTANCE),
    show_default="$ACCESSGW_INSTANCE or ./instance",
    help="Instance folder made by `init`.",
)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Access-control and credential gateway: badges, decisions, audit."""
    level = os.environ.get("ACCESSGW_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def sync_site(instance: Instance, site: Site) -> None:
    """Mirror zones.yaml's gates and readers into the database."""
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        for gate in site.gates.values():
            s.merge(GateRecord(code=gate.code, name=gate.name, from_zone=gate.from_zone, to_zone=gate.to_zone))
        s.flush()
        for reader in site.readers.values():
            s.merge(ReaderRecord(code=reader.code, gate_code=reader.gate, side=reader.side))


def add_operator(instance: Instance, username: str, role: str, password: str | None = None) -> str:
    from gateway.web.auth import ROLES, hash_password

    if role not in ROLES:
        raise click.ClickException(f"role must be one of {', '.join(ROLES)}")
    password = password or secrets.token_urlsafe(12)
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        if s.scalar(select(Operator).where(Operator.username == username)):
            raise click.ClickException(f"operator {username!r} exists already")
        s.add(
            Operator(
                username=username,
                password_hash=hash_password(password),
                role=role,
                active=True,
                created_at=_now(),
            )
        )
    return password


@main.command()
@instance_option
@click.option("--site", "site_file", type=click.Path(path_type=Path), default="zones.yaml", show_default=True)
@click.option("--database", default=None, help="SQLAlchemy URL; default: SQLite file in the instance folder.")
@click.option("--issuer", default=None, help="Badge issuer; default: the site code.")
@click.option("--admin", default="admin", show_default=True, help="Name of the first administrator.")
@click.option("--admin-password", default=None, help="Default: a random one, printed once.")
def init(
    instance_path: str,
    site_file: Path,
    database: str | None,
    issuer: str | None,
    admin: str,
    admin_password: str | None,
) -> None:
    """Create the instance: signing keys, database schema, site mirror, first administrator."""
    site = _site(site_file)
    folder = Path(instance_path).resolve()
    url = database or f"sqlite:///{folder / 'gateway.db'}"
    try:
        create_instance(folder, url, site_file, issuer or site.code)
    except InstanceError as exc:
        raise click.ClickException(str(exc)) from None
    upgrade(url)
    instance = _instance(str(folder))
    sync_site(instance, site)
    password = add_operator(instance, admin, "admin", admin_password)
    click.echo(f"instance created in {folder}")
    click.echo(f"  badge key id     {instance.keyring.badge_kid}")
    click.echo(f"  decision key id  {instance.keyring.decision_kid} (give {folder}/keys/decision.pub.pem to readers)")
    click.echo(f"  database         {url.split('@')[-1]}")
    click.echo(f"  administrator    {admin} / {password}   (shown once)")


@main.command()
@instance_option
def migrate(instance_path: str) -> None:
    """Bring the database schema up to date (Alembic)."""
    instance = _instance(instance_path)
    upgrade(instance.settings.database_url)
    click.echo("schema up to date")


@main.command("add-operator")
@instance_option
@click.argument("username")
@click.option("--role", type=click.Choice(["desk", "lead", "admin"]), required=True)
def add_operator_cmd(instance_path: str, username: str, role: str) -> None:
    """Create a web login for a desk clerk, a security lead or an administrator."""
    password = add_operator(_instance(instance_path), username, role)
    click.echo(f"{username} / {password}   (shown once)")


@main.command("broker-config")
@instance_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the broker files.")
@click.option("--port", type=int, default=1883, show_default=True)
def broker_config(instance_path: str, out: Path, port: int) -> None:
    """Write Mosquitto config, accounts and ACL for every reader and bridge of the site."""
    instance = _instance(instance_path)
    files = write_broker_files(out, _site(instance.settings.site_file), port)
    click.echo(f"broker files in {files.folder}: mosquitto.conf, passwd, acl, credentials.json (owner-only)")


@main.command("add-holder")
@instance_option
@click.option("--family-name", required=True)
@click.option("--given-name", required=True)
@click.option("--organisation", required=True, help="Organisation code, e.g. GN-PARIS.")
@click.option("--organisation-name", default=None)
@click.option("--kind", default="police", show_default=True, help="Organisation kind.")
@click.option("--country", default="FR", show_default=True)
@click.option("--role", required=True)
def add_holder(
    instance_path: str,
    family_name: str,
    given_name: str,
    organisation: str,
    organisation_name: str | None,
    kind: str,
    country: str,
    role: str,
) -> None:
    """Register a holder; prints the holder id."""
    instance = _instance(instance_path)
    site = _site(instance.settings.site_file)
    sessions = session_factory(make_engine(instance.settings.database_url))
    try:
        with sessions() as s, s.begin():
            org = badges.get_or_create_organisation(s, organisation, organisation_name or organisation, kind, country)
            holder = badges.register_holder(s, site, org, family_name, given_name, role, country, _now())
            click.echo(holder.id)
    except badges.DeskError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("issue-badge")
@instance_option
@click.argument("holder_id")
@click.option("--zones", required=True, help="Comma-separated zone codes.")
@click.option("--days", type=float, default=30, show_default=True, help="Validity from now.")
@click.option("--qr", "qr_file", type=click.Path(path_type=Path), default=None, help="Also write the QR as PNG.")
def issue_badge(instance_path: str, holder_id: str, zones: str, days: float, qr_file: Path | None) -> None:
    """Issue a signed badge; prints its id and token."""
    instance = _instance(instance_path)
    site = _site(instance.settings.site_file)
    sessions = session_factory(make_engine(instance.settings.database_url))
    now = _now()
    try:
        with sessions() as s, s.begin():
            holder = s.get(Holder, holder_id)
            if holder is None:
                raise click.ClickException(f"no holder {holder_id!r}")
            badge = badges.issue_badge(
                s,
                site,
                instance.keyring,
                instance.settings.issuer,
                holder,
                [z.strip() for z in zones.split(",") if z.strip()],
                now,
                now + dt.timedelta(days=days),
                now,
            )
    except badges.DeskError as exc:
        raise click.ClickException(str(exc)) from None
    if qr_file:
        import qrcode

        qrcode.make(badge.token, error_correction=qrcode.constants.ERROR_CORRECT_M).save(str(qr_file))
    click.echo(f"{badge.id}\t{badge.token}")


@main.command("revoke-badge")
@instance_option
@click.argument("badge_id")
@click.option("--reason", default="revoked at the desk", show_default=True)
def revoke_badge(instance_path: str, badge_id: str, reason: str) -> None:
    """Revoke a badge: the next online decision denies it."""
    instance = _instance(instance_path)
    sessions = session_factory(make_engine(instance.settings.database_url))
    try:
        with sessions() as s, s.begin():
            badges.revoke_badge(s, badge_id, reason, _now())
    except badges.DeskError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {badge_id}")


def build_decision_process(instance: Instance, host: str, port: int, password_file: Path, worker: str):  # type: ignore[no-untyped-def]
    """Composition root of the decision process: the decision worker and the retained-site publisher."""
    import time

    from gateway.broker_setup import GATEWAY_USER
    from gateway.decision_worker import DecisionWorker
    from gateway.decisions import DecisionService
    from gateway.keyring_cache import ReloadingKeyring
    from gateway.mqttlink import BrokerAddress
    from gateway.site_publisher import SitePublisher

    site = _site(instance.settings.site_file)
    sessions = session_factory(make_engine(instance.settings.database_url))
    keyring = ReloadingKeyring(instance.folder)
    service = DecisionService(
        site=site, keyring=keyring, issuer=instance.settings.issuer, sessions=sessions, clock=_now
    )
    address = BrokerAddress.from_password_file(host, port, GATEWAY_USER, password_file)
    publisher = SitePublisher(
        address,
        f"gateway-{worker}-site",
        site,
        instance.settings.site_file.read_text(encoding="utf-8"),
        keyring,
        instance.settings.issuer,
        sessions,
        lambda: int(time.time() * 1000),
    )
    return DecisionWorker(service, address, client_id=f"gateway-{worker}"), publisher


broker_options = [
    click.option("--broker-host", default="127.0.0.1", show_default=True),
    click.option("--broker-port", type=int, default=1883, show_default=True),
    click.option(
        "--password-file",
        type=click.Path(exists=True, path_type=Path),
        required=True,
        help="File holding the gateway's MQTT password.",
    ),
]


def with_broker_options(f):  # type: ignore[no-untyped-def]
    for option in reversed(broker_options):
        f = option(f)
    return f


def _wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


@main.command()
@instance_option
@with_broker_options
@click.option("--worker", default="1", show_default=True, help="Worker name; run several to share the load.")
def decide(instance_path: str, broker_host: str, broker_port: int, password_file: Path, worker: str) -> None:
    """Run the decision service: answer readers over MQTT, audit first."""
    decisions, publisher = build_decision_process(
        _instance(instance_path), broker_host, broker_port, password_file, worker
    )
    try:
        publisher.start()
        decisions.start()
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"decision worker {worker} answering on {broker_host}:{broker_port}")
    _wait_for_signal()
    decisions.stop()
    publisher.stop()


@main.command()
@instance_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
def web(instance_path: str, host: str, port: int) -> None:
    """Run the web side (desk and leads' pages, JSON API, JWKS)."""
    from werkzeug.serving import run_simple

    from gateway.web import create_app

    try:
        app = create_app(Path(instance_path))
    except InstanceError as exc:
        raise click.ClickException(str(exc)) from None
    run_simple(host, port, app, threaded=True)


@main.command("threat-level")
@instance_option
@click.argument("level", required=False)
@click.option("--operator", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.option("--why", default="", help="Reason, kept in the audit.")
def threat_level(instance_path: str, level: str | None, operator: str, why: str) -> None:
    """Show the threat level, or switch it to LEVEL (the next decision uses it; the switch is audited)."""
    from gateway.decisions import current_threat_level
    from gateway.threat import ThreatLevelError, set_threat_level

    instance = _instance(instance_path)
    site = _site(instance.settings.site_file)
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        if level is None:
            click.echo(current_threat_level(s, site))
            return
        try:
            previous = set_threat_level(s, site, level, operator, _now(), why)
        except ThreatLevelError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"threat level {previous} -> {level}")

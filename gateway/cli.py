"""`python -m gateway`: set up an instance, run the web side and the decision service, desk commands."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from gateway import badges, jsonlog
from gateway.badge_cache import DEFAULT_ENTRIES as DEFAULT_BADGE_CACHE
from gateway.broker_setup import write_broker_files
from gateway.db.engine import make_engine, session_factory, upgrade
from gateway.db.models import GateRecord, Holder, Operator, ReaderRecord
from gateway.instance import Instance, InstanceError, create_instance, load_instance
from gateway.rate_limit import DEFAULT_BURST, DEFAULT_RATE
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
@click.option(
    "--log-format",
    type=click.Choice(jsonlog.LOG_FORMATS),
    default=lambda: os.environ.get("ACCESSGW_LOG_FORMAT", "text"),
    show_default="$ACCESSGW_LOG_FORMAT or text",
    help="json: one JSON object per line, with gate, reader and nonce on the lines of a scan.",
)
def main(verbose: bool, log_format: str) -> None:
    """Access-control and credential gateway: badges, decisions, audit."""
    level = os.environ.get("ACCESSGW_LOG_LEVEL", "INFO").upper()
    jsonlog.configure(log_format, logging.DEBUG if verbose else getattr(logging, level, logging.INFO), "gateway")


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
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, help="Serve Prometheus /metrics here.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address the metrics port listens on.")
@click.option(
    "--reader-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_RATE,
    show_default=True,
    help="Requests per second each reader may send on average; more are dropped.",
)
@click.option(
    "--reader-burst",
    type=click.IntRange(min=1),
    default=DEFAULT_BURST,
    show_default=True,
    help="Requests a reader may send at once after a quiet spell.",
)
@click.option(
    "--badge-cache",
    type=click.IntRange(min=0),
    default=DEFAULT_BADGE_CACHE,
    show_default=True,
    help="Badge tokens kept as verified (their signature is not checked again); 0 checks every scan in full.",
)
def decide(
    instance_path: str,
    broker_host: str,
    broker_port: int,
    password_file: Path,
    worker: str,
    metrics_port: int | None,
    metrics_host: str,
    reader_rate: float,
    reader_burst: int,
    badge_cache: int,
) -> None:
    """Run the decision service: answer readers over MQTT, audit first."""
    import time

    from gateway.decision_process import decision_process
    from gateway.rate_limit import ReaderRateLimit

    metrics = (metrics_host, metrics_port) if metrics_port is not None else None
    limit = ReaderRateLimit(time.monotonic, rate=reader_rate, burst=reader_burst)
    process = decision_process(
        _instance(instance_path),
        broker_host,
        broker_port,
        password_file,
        worker,
        metrics,
        rate_limit=limit,
        badge_cache=badge_cache,
    )
    try:
        process.start()
    except OSError as exc:  # ConnectionError from the broker, or the metrics port taken
        raise click.ClickException(str(exc)) from None
    click.echo(f"decision worker {worker} answering on {broker_host}:{broker_port}")
    _wait_for_signal()
    process.stop()


@main.command()
@instance_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--broker-port", type=int, default=1883, show_default=True)
@click.option(
    "--password-file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="The gateway's MQTT password: with it, the operations page shows readers' live statuses.",
)
def web(
    instance_path: str, host: str, port: int, broker_host: str, broker_port: int, password_file: Path | None
) -> None:
    """Run the web side (desk and leads' pages, JSON API, JWKS, health and the operations page)."""
    from werkzeug.serving import run_simple

    from gateway.broker_setup import GATEWAY_USER
    from gateway.mqttlink import BrokerAddress
    from gateway.web import create_app

    overrides: dict[str, Any] = {}
    if password_file is not None:
        overrides["BROKER_ADDRESS"] = BrokerAddress.from_password_file(
            broker_host, broker_port, GATEWAY_USER, password_file
        )
    try:
        app = create_app(Path(instance_path), overrides)
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


# --- badge desk commands (scripting the desk: operators, contingents, badges, keys) ----------------------


def _desk_sessions(instance: Instance):  # type: ignore[no-untyped-def]
    return session_factory(make_engine(instance.settings.database_url))


def _desk_refusal(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@main.command("create-api-token")
@instance_option
@click.argument("username")
@click.option("--name", default="script", show_default=True, help="What the token is for.")
def create_api_token(instance_path: str, username: str, name: str) -> None:
    """Make an API token acting as operator USERNAME (printed once; send it as 'Authorization: Bearer ...')."""
    from gateway import operators

    instance = _instance(instance_path)
    with _desk_sessions(instance)() as s, s.begin():
        op = operators.find(s, username)
        if op is None or not op.active:
            raise click.ClickException(f"no active operator {username!r}")
        token, _ = operators.new_api_token(s, op, name, _now())
    click.echo(token)


@main.command("add-organisation")
@instance_option
@click.argument("code")
@click.option("--name", required=True)
@click.option("--kind", required=True, help="police, gendarmerie, military, private_security, civil_protection, other")
@click.option("--country", required=True, help="ISO 3166 code, e.g. DE.")
def add_organisation(instance_path: str, code: str, name: str, kind: str, country: str) -> None:
    """Create an organisation or national contingent."""
    from gateway import holders

    instance = _instance(instance_path)
    try:
        with _desk_sessions(instance)() as s, s.begin():
            holders.create_organisation(s, code, name, kind, country.upper())
    except holders.DeskError as exc:
        raise _desk_refusal(exc) from None
    click.echo(f"organisation {code} created")


@main.command("import-holders")
@instance_option
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--organisation", required=True, help="The contingent's organisation code.")
@click.option("--good-rows-only", is_flag=True, help="Import the good rows of a file that has bad rows.")
def import_holders(instance_path: str, csv_file: Path, organisation: str, good_rows_only: bool) -> None:
    """Import a contingent's CSV: every row is checked first; a file with a bad row imports nothing (unless
    --good-rows-only), and never half of itself."""
    from gateway import holders, holders_csv

    instance = _instance(instance_path)
    site = _site(instance.settings.site_file)
    data = csv_file.read_bytes()
    stack = contextlib.ExitStack()
    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:  # a bar per stage (checking, importing), on stderr so stdout stays scriptable
            bars[stage] = stack.enter_context(
                click.progressbar(length=max(total, 1), label=f"{stage:9}", file=click.get_text_stream("stderr"))
            )
        bar = bars[stage]
        bar.length = max(total, 1)
        bar.update(done - bar.pos)

    try:
        with stack, _desk_sessions(instance)() as s, s.begin():
            org = holders.find_organisation(s, organisation)
            if org is None:
                raise click.ClickException(f"no organisation {organisation!r}: create it with add-organisation")
            checked = holders_csv.check_file(data, site, instance.settings.issuer, s, org, org.country, progress)
            for p in checked.problems:
                click.echo(f"{csv_file.name}:{p.line}: {p.reason}", err=True)
            result = holders_csv.import_checked(
                s, site, org, checked, _now(), badges.command_line_actor(), csv_file.name, good_rows_only, progress
            )
    except holders.DeskError as exc:
        raise _desk_refusal(exc) from None
    left = f"; {len(result.skipped_lines)} bad row(s) left out" if result.skipped_lines else ""
    click.echo(f"imported {result.imported} holder(s) into {organisation}{left}")


@main.command("issue-badges")
@instance_option
@click.option("--organisation", required=True, help="Issue to every holder of this contingent who needs a badge.")
@click.option("--pdf", "pdf_file", type=click.Path(dir_okay=False, path_type=Path), help="Print them to this PDF.")
@click.option("--layout", type=click.Choice(["sheet", "card"]), default="sheet", show_default=True)
def issue_badges(instance_path: str, organisation: str, pdf_file: Path | None, layout: str) -> None:
    """Batch issue: a badge for each holder of a contingent with an assignment and no current badge for it;
    with --pdf, print every current badge of the contingent (A4 sheets of ten, or one card per page)."""
    from gateway import holders

    instance = _instance(instance_path)
    site = _site(instance.settings.site_file)
    with _desk_sessions(instance)() as s, s.begin():
        org = holders.find_organisation(s, organisation)
        if org is None:
            raise click.ClickException(f"no organisation {organisation!r}")
        with click.progressbar(length=1, label="issuing ", file=click.get_text_stream("stderr")) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            by = badges.command_line_actor()
            result = badges.issue_for_organisation(
                s, site, instance.keyring, instance.settings.issuer, org, _now(), by, progress
            )
        for holder, why in result.skipped:
            if not why.startswith("already"):
                click.echo(f"{holder.id} {holder.family_name} {holder.given_name}: {why}", err=True)
    click.echo(f"issued {len(result.issued)} badge(s) for {organisation}")
    if pdf_file is not None:
        count = _print_organisation(instance, site, organisation, pdf_file, layout)
        click.echo(f"printed {count} card(s) to {pdf_file}")


def _print_organisation(instance: Instance, site: Site, organisation: str, pdf_file: Path, layout: str) -> int:
    from gateway import cards, holders
    from gateway.web.desk import organisation_faces

    with _desk_sessions(instance)() as s:
        org = holders.find_organisation(s, organisation)
        if org is None:
            raise click.ClickException(f"no organisation {organisation!r}")
        faces = organisation_faces(s, site, org, _now())
    if not faces:
        raise click.ClickException(f"{organisation} has no current badge to print")
    pdf_file.write_bytes(cards.sheet_pdf(faces) if layout == "sheet" else cards.card_pdf(faces))
    return len(faces)


@main.command("print-badges")
@instance_option
@click.option("--organisation", help="Every current badge of this contingent.")
@click.option("--badge", "badge_ids", multiple=True, help="A badge id (repeat for several).")
@click.option("--pdf", "pdf_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--layout", type=click.Choice(["sheet", "card"]), default="card", show_default=True)
def print_badges(
    instance_path: str, organisation: str | None, badge_ids: tuple[str, ...], pdf_file: Path, layout: str
) -> None:
    """Print badges as PDF: ID-1 cards (85.6 x 54 mm, one a page) or A4 sheets of ten."""
    from gateway import cards, holders
    from gateway.db.models import Badge

    instance = _instance(instance_path)
    site = _site(instance.settings.site_file)
    if organisation:
        count = _print_organisation(instance, site, organisation, pdf_file, layout)
    else:
        if not badge_ids:
            raise click.ClickException("give --organisation or at least one --badge")
        faces = []
        with _desk_sessions(instance)() as s:
            for badge_id in badge_ids:
                b = s.get(Badge, badge_id)
                if b is None or b.revocation is not None:
                    raise click.ClickException(f"badge {badge_id!r} is unknown or revoked")
                faces.append(cards.face_for(site, b, holders.assignment_of(s, b.holder_id)))
        pdf_file.write_bytes(cards.sheet_pdf(faces) if layout == "sheet" else cards.card_pdf(faces))
        count = len(faces)
    click.echo(f"printed {count} card(s) to {pdf_file}")


@main.command("reissue-badge")
@instance_option
@click.argument("badge_id")
@click.option("--reason", default="lost", show_default=True)
def reissue_badge(instance_path: str, badge_id: str, reason: str) -> None:
    """Replace a lost badge: it is revoked at once, and a new one issued; prints the new badge id."""
    instance = _instance(instance_path)
    site = _site(instance.settings.site_file)
    try:
        with _desk_sessions(instance)() as s, s.begin():
            by = badges.command_line_actor()
            keyring, issuer = instance.keyring, instance.settings.issuer
            new = badges.reissue_badge(s, site, keyring, issuer, badge_id, reason, _now(), by)
            click.echo(new.id)
    except badges.DeskError as exc:
        raise _desk_refusal(exc) from None


@main.command("suspend-holder")
@instance_option
@click.argument("holder_id")
@click.option("--reason", required=True)
@click.option("--reinstate", is_flag=True, help="Lift the suspension instead.")
def suspend_holder(instance_path: str, holder_id: str, reason: str, reinstate: bool) -> None:
    """Suspend a holder (gates refuse their badges from the next decision on), or reinstate them."""
    from gateway import holders
    from gateway.db.models import Holder

    instance = _instance(instance_path)
    try:
        with _desk_sessions(instance)() as s, s.begin():
            holder = s.get(Holder, holder_id)
            if holder is None:
                raise click.ClickException(f"no holder {holder_id!r}")
            change = holders.reinstate if reinstate else holders.suspend
            change(s, holder, reason, _now(), badges.command_line_actor())
    except holders.DeskError as exc:
        raise _desk_refusal(exc) from None
    click.echo(f"{holder_id} {'reinstated' if reinstate else 'suspended'}")


@main.command("set-photo")
@instance_option
@click.argument("holder_id")
@click.argument("photo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def set_photo(instance_path: str, holder_id: str, photo: Path) -> None:
    """Give a holder their ID photo (JPEG or PNG; cropped to 35 x 45 and shrunk)."""
    from gateway import photos
    from gateway.db.models import Holder

    instance = _instance(instance_path)
    try:
        jpeg = photos.prepare(photo.read_bytes())
    except photos.PhotoError as exc:
        raise click.ClickException(f"{photo}: {exc}") from None
    with _desk_sessions(instance)() as s, s.begin():
        holder = s.get(Holder, holder_id)
        if holder is None:
            raise click.ClickException(f"no holder {holder_id!r}")
        holder.photo, holder.photo_type = jpeg, "image/jpeg"
    click.echo(f"photo saved for {holder_id}")


@main.command("rotate-keys")
@instance_option
def rotate_keys(instance_path: str) -> None:
    """Sign new badges with a new badge key (new kid); badges signed earlier stay valid until their key is retired."""
    from gateway import audit
    from gateway.instance import rotate_badge_key

    instance = _instance(instance_path)
    old, new = rotate_badge_key(instance.folder)
    now = _now()
    with _desk_sessions(instance)() as s, s.begin():
        audit.record_action(
            s,
            "key_rotated",
            now,
            operator=badges.command_line_actor().name,
            detail=f"new badges are signed with key {new}; key {old} stays accepted until retired",
        )
    click.echo(f"new badge key {new}; {old} stays accepted until `retire-key {old}`")


@main.command("retire-key")
@instance_option
@click.argument("kid")
def retire_key(instance_path: str, kid: str) -> None:
    """Stop accepting badge key KID: every badge it signed is refused from now on."""
    from gateway import audit
    from gateway.instance import retire_badge_key

    instance = _instance(instance_path)
    try:
        retire_badge_key(instance.folder, kid)
    except InstanceError as exc:
        raise click.ClickException(str(exc)) from None
    now = _now()
    with _desk_sessions(instance)() as s, s.begin():
        audit.record_action(
            s,
            "key_retired",
            now,
            operator=badges.command_line_actor().name,
            detail=f"key {kid} retired: badges it signed are refused from now on",
        )
    click.echo(f"key {kid} retired")


@main.command("list-keys")
@instance_option
def list_keys(instance_path: str) -> None:
    """The badge keys: the one signing new badges, the older ones still accepted, the retired ones."""
    from gateway.instance import badge_keys

    for key in badge_keys(Path(instance_path)):
        click.echo(f"{key.kid}\t{key.state}\t{key.since:%Y-%m-%d %H:%M}")


@main.group()
def audit() -> None:
    """Prove the audit complete: checkpoints, verification, exports."""


def _checkpoint_file(instance: Instance) -> Path:
    from gateway.decision_process import checkpoint_file

    return checkpoint_file(instance)


@audit.command("checkpoint")
@instance_option
def audit_checkpoint(instance_path: str) -> None:
    """Sign the chain's head and append it to the checkpoint file (the decision process does it regularly)."""
    from gateway.audit_verify import checkpoint_now

    instance = _instance(instance_path)
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s:
        cp = checkpoint_now(s, _checkpoint_file(instance), instance.keyring.decision_signing, _now())
    click.echo(f"checkpoint at entry {cp.seq}" if cp else "nothing new to checkpoint")


@audit.command("verify")
@instance_option
@click.option(
    "--checkpoints",
    "checkpoint_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint file (default: the instance's); use a copy kept off the machine.",
)
def audit_verify(instance_path: str, checkpoint_file: Path | None) -> None:
    """Check every entry's hash and link, and every checkpoint; exit 1 naming the first bad entry."""
    from gateway.audit_verify import read_checkpoints, verify_database

    instance = _instance(instance_path)
    sessions = session_factory(make_engine(instance.settings.database_url))
    pub = instance.keyring.decision_signing.public_key()
    from gateway.contract import key_id

    with sessions() as s:
        report = verify_database(s, read_checkpoints(checkpoint_file or _checkpoint_file(instance)), {key_id(pub): pub})
    if not report.ok:
        click.echo(f"AUDIT BROKEN: {report.problem}", err=True)
        raise SystemExit(1)
    click.echo(f"audit intact: {report.entries} entries, {report.checkpoints} checkpoints verified")


@audit.command("export")
@instance_option
@click.option("--from", "first", type=int, default=1, show_default=True)
@click.option("--to", "last", type=int, default=None, help="Last entry (default: the head).")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--operator", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def audit_export(instance_path: str, first: int, last: int | None, out: Path, operator: str) -> None:
    """Export a range of entries that verifies elsewhere with only the decision public key."""
    from gateway import audit as audit_log
    from gateway.audit_verify import export_range, read_checkpoints

    instance = _instance(instance_path)
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, open(out, "w", encoding="utf-8") as f:
        count = export_range(
            s, first, last, read_checkpoints(_checkpoint_file(instance)), f, instance.keyring.decision_signing, _now()
        )
    with sessions() as s, s.begin():  # an export is itself audited
        audit_log.record_action(
            s,
            "audit_export",
            _now(),
            operator=operator,
            detail=f"entries {first}..{last or 'head'} ({count}) to {out.name}",
        )
    click.echo(f"exported {count} entries to {out}")


@audit.command("verify-export")
@click.argument("export_file", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--public-key",
    "public_key",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="The gateway's decision public key (decision.pub.pem).",
)
def audit_verify_export(export_file: Path, public_key: Path) -> None:
    """Verify an exported range on any machine, with the public key alone."""
    from gateway.audit_verify import verify_export
    from gateway.contract import key_id, public_key_from_pem

    pub = public_key_from_pem(public_key.read_bytes())
    with open(export_file, encoding="utf-8") as f:
        report = verify_export(f, {key_id(pub): pub})
    if not report.ok:
        click.echo(f"EXPORT BROKEN: {report.problem}", err=True)
        raise SystemExit(1)
    click.echo(f"export intact: {report.entries} entries, {report.checkpoints} checkpoint(s) verified")


@main.group()
def guard() -> None:
    """Guards of the reader's gate page: badge + PIN login, override right (docs/gate_page.md)."""


@guard.command("add")
@instance_option
@click.argument("holder_id")
@click.option("--override/--no-override", default=False, show_default=True, help="May force a grant despite a denial.")
@click.option("--pin", prompt=True, hide_input=True, confirmation_prompt=True, help="4 to 12 digits (else asked).")
def guard_add(instance_path: str, holder_id: str, override: bool, pin: str) -> None:
    """Make holder HOLDER_ID a guard with a PIN, or set an existing guard's PIN and right (unlocks them)."""
    from gateway import guards, holders

    instance = _instance(instance_path)
    try:
        with _desk_sessions(instance)() as s, s.begin():
            guards.set_guard(s, holder_id, pin, override, _now(), badges.command_line_actor())
    except holders.DeskError as exc:
        raise _desk_refusal(exc) from None
    click.echo(f"{holder_id} is a guard{' with the override right' if override else ''}")


@guard.command("remove")
@instance_option
@click.argument("holder_id")
def guard_remove(instance_path: str, holder_id: str) -> None:
    """Withdraw a guard's gate page access and end their open sessions."""
    from gateway import guards, holders

    instance = _instance(instance_path)
    try:
        with _desk_sessions(instance)() as s, s.begin():
            guards.remove_guard(s, holder_id, _now(), badges.command_line_actor())
    except holders.DeskError as exc:
        raise _desk_refusal(exc) from None
    click.echo(f"{holder_id} is no longer a guard")


@guard.command("list")
@instance_option
def guard_list(instance_path: str) -> None:
    """Guards: holder id, name, override right, active, locked."""
    from gateway import guards

    instance = _instance(instance_path)
    with _desk_sessions(instance)() as s:
        for g, h in guards.list_guards(s):
            locked = "locked" if g.locked_until is not None and g.locked_until > _now() else ""
            right = "override" if g.can_override else "-"
            state = "active" if g.active else "removed"
            click.echo(f"{h.id}\t{h.given_name} {h.family_name}\t{right}\t{state}\t{locked}")


# --- retention of personal data (gateway/retention.py, docs/retention.md) ------------------------------


@main.group()
def retention() -> None:
    """Remove holders' personal data some days after their access ended; ask whether a removed person was here."""


@retention.command("run")
@instance_option
@click.option("--dry-run", is_flag=True, help="Only list the holders whose personal data would be removed.")
@click.option("--operator", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def retention_run(instance_path: str, dry_run: bool, operator: str) -> None:
    """Remove the personal data of holders whose last badge ended `personal_data_days` days ago (audited)."""
    from gateway import retention as policy

    instance = _instance(instance_path)
    days = instance.settings.personal_data_days
    if days is None:
        raise click.ClickException(
            "no retention period set: `python -m gateway retention set-days N` (personal_data_days in gateway.json)"
        )
    try:
        key = None if dry_run else policy.identity_key(instance.folder, create=True)
        with _desk_sessions(instance)() as s, s.begin():
            report = policy.run(s, key, _now(), days, operator, dry_run=dry_run)
    except (InstanceError, policy.RetentionError) as exc:
        raise click.ClickException(str(exc)) from None
    for item in report.removed:
        click.echo(f"{item.holder_id}\taccess ended {item.ended:%Y-%m-%d %H:%M}Z")
    verb = "would be removed" if dry_run else "removed"
    click.echo(f"personal data of {len(report.removed)} holder(s) {verb} (access ended by {report.cutoff:%Y-%m-%d}Z)")


@retention.command("set-days")
@instance_option
@click.argument("days", type=click.IntRange(min=0))
@click.option("--operator", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def retention_set_days(instance_path: str, days: int, operator: str) -> None:
    """Keep personal data DAYS days after a holder's last badge ended (saved in gateway.json; audited)."""
    import dataclasses

    from gateway import audit as audit_log
    from gateway.instance import save_settings

    instance = _instance(instance_path)
    before = instance.settings.personal_data_days
    save_settings(instance.folder, dataclasses.replace(instance.settings, personal_data_days=days))
    with _desk_sessions(instance)() as s, s.begin():
        audit_log.record_action(
            s, "retention_setting", _now(), operator=operator, detail=f"personal data kept {days} days (was {before})"
        )
    click.echo(f"personal data is kept {days} days after a holder's last badge ended")


@retention.command("lookup")
@instance_option
@click.option("--family-name", required=True)
@click.option("--given-name", required=True)
@click.option("--operator", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def retention_lookup(instance_path: str, family_name: str, given_name: str, operator: str) -> None:
    """Was this person here? Finds holders by name, also those whose personal data was removed (audited)."""
    from gateway import audit as audit_log
    from gateway import retention as policy

    instance = _instance(instance_path)
    try:
        key = policy.identity_key(instance.folder)
    except InstanceError as exc:
        raise click.ClickException(str(exc)) from None
    with _desk_sessions(instance)() as s, s.begin():
        found = policy.lookup(s, key, family_name, given_name)
        # The name itself is not logged: the audit would then hold what retention removed.
        audit_log.record_action(
            s, "person_lookup", _now(), operator=operator, detail=f"name lookup: {len(found)} holder(s) found"
        )
    if not found:
        click.echo("nobody of that name")
    for f in found:
        state = "personal data removed" if f.removed else "registered"
        when = f"{f.first:%Y-%m-%d %H:%M}Z..{f.last:%Y-%m-%d %H:%M}Z" if f.first and f.last else "-"
        gates = " ".join(f.gates) or "-"
        click.echo(f"{f.holder_id}\t{state}\t{f.decisions} decision(s), {f.granted} granted\t{when}\t{gates}")

"""Shared fixtures: the sample site, a private Mosquitto started by the suite, database URLs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.broker_setup import BrokerFiles, free_port, start_mosquitto, write_broker_files
from gateway.site import Site, load_site

ROOT = Path(__file__).resolve().parent.parent
SITE_FILE = ROOT / "zones.yaml"
QR_PHOTOS = ROOT.parent / "shared" / "qr-photos"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def site() -> Site:
    return load_site(SITE_FILE)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[BrokerFiles]:
    """A private Mosquitto with an account per gateway, reader and bridge, and the site's ACL."""
    folder = tmp_path_factory.mktemp("mosquitto")
    files = write_broker_files(folder, site, port=free_port())
    proc = start_mosquitto(files, log=folder / "mosquitto.log")
    yield files
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


PG_URL = os.environ.get("ACCESSGW_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_schema_url() -> Iterator[str]:
    """A fresh schema in the test database; dropped afterwards. Under CI an unreachable server is an error."""
    import secrets

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI and is not reachable at {PG_URL}: {exc}")
        pytest.skip(f"no PostgreSQL at {PG_URL}")
    try:
        sep = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each supported kind, migrated to the current schema."""
    from gateway.db.engine import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gateway.db'}"
        upgrade(url)
        yield url
    else:
        for url in _pg_schema_url():
            upgrade(url)
            yield url


@pytest.fixture
def instance(tmp_path: Path, database_url: str, site: Site):  # type: ignore[no-untyped-def]
    """A gateway instance (keys, settings) on each database kind, with the site mirrored."""
    from gateway.cli import sync_site
    from gateway.instance import create_instance, load_instance

    folder = tmp_path / "instance"
    create_instance(folder, database_url, SITE_FILE, site.code)
    inst = load_instance(folder)
    sync_site(inst, site)
    return inst


@pytest.fixture(scope="session")
def qr_photos() -> list[tuple[Path, str]]:
    """The real photos holding a QR code, each with its exact expected text; skips when the set is absent."""
    if not QR_PHOTOS.is_dir():
        pytest.skip(f"QR photos not found at {QR_PHOTOS}")
    return [
        (image, image.with_suffix(".txt").read_bytes().decode("utf-8"))
        for folder in sorted(QR_PHOTOS.glob("qrcode-*"))
        for image in sorted(folder.iterdir())
        if image.suffix in (".png", ".jpg")
    ]


@pytest.fixture(scope="session")
def qr_falsepositives() -> list[Path]:
    """Real photos with no QR code in them; skips when the set is absent."""
    folder = QR_PHOTOS / "falsepositives-2"
    if not folder.is_dir():
        pytest.skip(f"QR photos without codes not found at {folder}")
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="session")
def badge_tokens() -> list[str]:
    """Three real badge tokens, what QR badges carry (~340 characters each), signed by a fixed test key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.tokens import issue_token

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    return [
        issue_token(
            key,
            issuer="event-2025",
            badge_id=f"badge-{number:06d}",
            holder_id=f"holder-{number + 4700:06d}",
            zones=["arena", "backstage", "press"],
            not_before=1_750_000_000,
            expires=1_750_086_400,
        )
        for number in (1, 2, 3)
    ]

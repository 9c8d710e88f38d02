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

"""The reader's command line: `decode` for still images (the agent's `run` command joins this group)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import cast

import click
import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import jsonlog
from readers.decoding import ENGINES, Decoder, EngineName, to_gray

# Keeps one line per image whatever a code holds (the sample photos include line breaks).
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v: info, -vv: debug).")
@click.option(
    "--log-format",
    type=click.Choice(jsonlog.LOG_FORMATS),
    default=lambda: os.environ.get("ACCESSGW_LOG_FORMAT", "text"),
    show_default="$ACCESSGW_LOG_FORMAT or text",
    help="json: one JSON object per line, with gate, reader and nonce on the lines of a scan.",
)
def main(verbose: int, log_format: str) -> None:
    """Badge reader for a turnstile camera."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    jsonlog.configure(log_format, level, "reader")
    if verbose < 2:
        # OpenCV prints its own warning for every file it cannot read; our messages say it once, better.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="auto",
    show_default=True,
    help="auto: zxing-cpp, then fallbacks when a code was seen but not read.",
)
def decode(images: tuple[str, ...], engine: str) -> None:
    """Print each IMAGE's path, a tab, and the text of the QR codes in it.

    Nothing after the tab when no code was found; several codes are separated by tabs, sorted. Tabs, line
    breaks and backslashes inside a text are written as \\t, \\n, \\r and \\\\. Exits with 1 if an image
    could not be read (the others are still decoded).
    """
    decoder = Decoder(cast(EngineName, engine))  # click.Choice has checked it
    unreadable = 0
    for image in images:
        frame = _read_image(image)
        if frame is None:
            unreadable += 1
            continue
        texts = decoder.decode(to_gray(frame))
        click.echo(f"{image}\t" + "\t".join(text.translate(_ESCAPES) for text in texts))
    if unreadable:
        sys.exit(1)


def _read_image(image: str) -> np.ndarray | None:
    path = Path(image)
    if not path.is_file():
        click.echo(f"error: {image}: no such file", err=True)
        return None
    frame = cv2.imread(image, cv2.IMREAD_COLOR)
    if frame is None:
        click.echo(f"error: {image}: not an image OpenCV can read", err=True)
    return frame


@main.command()
@click.option(
    "--site", "site_file", type=click.Path(exists=True, path_type=Path), default="zones.yaml", show_default=True
)
@click.option("--reader", "reader_code", required=True, help="This reader's code in zones.yaml.")
@click.option("--source", required=True, help="Camera index, video file, image folder, or rtsp:// / http:// URL.")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--broker-port", type=int, default=1883, show_default=True)
@click.option(
    "--password-file",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="File holding this reader's MQTT password (its user name is the reader code).",
)
@click.option(
    "--decision-key",
    "decision_keys",
    type=click.Path(exists=True, path_type=Path),
    multiple=True,
    required=True,
    help="The gateway's decision public key (PEM); repeat during a key change.",
)
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True)
@click.option("--fps", type=float, default=None, help="Play a file source at this rate, as a live camera would.")
@click.option(
    "--answer-timeout",
    type=float,
    default=1.5,
    show_default=True,
    help="Seconds to wait for the gateway before denying (gateway_unreachable).",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.05),
    default=10.0,
    show_default=True,
    help="Seconds between status messages (retained, with the frame, decode and decision counters).",
)
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, help="Serve Prometheus /metrics here.")
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Local SQLite file for offline operation: what the gateway published, and the decisions taken offline "
    "(kept until the gateway acknowledges them). Without it a missing answer is a plain denial.",
)
@click.option(
    "--offline-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="This reader's Ed25519 offline key (PEM, owner-only), to sign offline answers at a verify_locally gate; "
    "made at first start if missing. Give FILE.pub.pem to the gate's bridge (--reader-key).",
)
@click.option(
    "--upload-wait",
    type=click.FloatRange(min=0),
    default=3.0,
    show_default=True,
    help="At the end, seconds to wait for the gateway to acknowledge queued offline decisions.",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address the metrics port listens on.")
@click.option(
    "--gate-page",
    default=None,
    metavar="HOST:PORT",
    help="Serve the guard's gate page here (PORT alone: on 127.0.0.1). See docs/gate_page.md.",
)
@click.option(
    "--gate-page-idle",
    type=click.FloatRange(min=10),
    default=300.0,
    show_default=True,
    help="Seconds without a touch after which the guard on duty is logged out of the gate page.",
)
def run(
    site_file: Path,
    reader_code: str,
    source: str,
    broker_host: str,
    broker_port: int,
    password_file: Path,
    decision_keys: tuple[Path, ...],
    engine: str,
    fps: float | None,
    answer_timeout: float,
    heartbeat: float,
    metrics_port: int | None,
    metrics_host: str,
    store_path: Path | None,
    offline_key: Path | None,
    upload_wait: float,
    gate_page: str | None,
    gate_page_idle: float,
) -> None:
    """Watch a camera (or a file), ask the gateway for each badge shown, and drive the turnstile."""
    from gateway.mqttlink import BrokerAddress
    from gateway.site import SiteError, load_site
    from readers.capture import SourceError
    from readers.run import load_decision_keys, run_reader

    try:
        site = load_site(site_file)
    except SiteError as exc:
        raise click.ClickException(str(exc)) from None
    if reader_code not in site.readers:
        raise click.ClickException(f"reader {reader_code!r} is not in {site_file}")
    address = BrokerAddress.from_password_file(broker_host, broker_port, reader_code, password_file)
    signing_key = _offline_key(offline_key, site.gates[site.readers[reader_code].gate].offline_policy, store_path)
    try:
        agent = run_reader(
            site,
            reader_code,
            source,
            address,
            load_decision_keys(decision_keys),
            cast(EngineName, engine),
            fps,
            answer_timeout,
            heartbeat_s=heartbeat,
            metrics_address=(metrics_host, metrics_port) if metrics_port is not None else None,
            store_path=store_path,
            offline_key=signing_key,
            upload_wait_s=upload_wait,
            gate_page=_gate_page_address(gate_page),
            gate_page_idle_s=gate_page_idle,
        )
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    except ConnectionError as exc:
        raise click.ClickException(f"gateway link: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"metrics port {metrics_port}: {exc}") from None
    click.echo(f"{reader_code}: source ended after {agent.frames} frames, {agent.decodes} codes read", err=True)


def _offline_key(path: Path | None, policy: str, store: Path | None) -> Ed25519PrivateKey | None:
    """The offline signing key: loaded, or made at first start (its public half must then reach the bridge)."""
    from readers.offline_keys import OfflineKeyError, generate_offline_key, load_offline_key

    if path is None:
        if store is not None and policy == "verify_locally":
            click.echo("warning: no --offline-key: offline decisions will all be denials", err=True)
        return None
    try:
        if not path.exists():
            public = generate_offline_key(path)
            click.echo(f"new offline key {path}; give {public} to the gate's bridge (--reader-key)", err=True)
        return load_offline_key(path)
    except OfflineKeyError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
def keygen(key_file: Path) -> None:
    """Make this reader's Ed25519 offline key in KEY_FILE (owner-only) and its public key KEY_FILE.pub.pem.

    The bridge of the reader's gate accepts offline answers signed with it (run --reader-key READER=PUB);
    an existing KEY_FILE is never overwritten.
    """
    from readers.offline_keys import OfflineKeyError, generate_offline_key

    try:
        public = generate_offline_key(key_file)
    except OfflineKeyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(public))


def _gate_page_address(text: str | None) -> tuple[str, int] | None:
    from readers.gate_page_http import parse_address

    if text is None:
        return None
    try:
        return parse_address(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--gate-page") from None

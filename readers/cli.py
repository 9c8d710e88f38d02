"""The reader's command line: `decode` for still images (the agent's `run` command joins this group)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import cast

import click
import cv2
import numpy as np

from readers.decoding import ENGINES, Decoder, EngineName, to_gray

# Keeps one line per image whatever a code holds (the sample photos include line breaks).
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v: info, -vv: debug).")
def main(verbose: int) -> None:
    """Badge reader for a turnstile camera."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
        )
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    except ConnectionError as exc:
        raise click.ClickException(f"gateway link: {exc}") from None
    click.echo(f"{reader_code}: source ended after {agent.frames} frames, {agent.decodes} codes read", err=True)

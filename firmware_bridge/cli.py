"""Command line: `python -m firmware_bridge keygen|run`. The composition root of the bridge process."""

from __future__ import annotations

import importlib.util
import logging
import signal
import threading
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_bridge.keys import KeyFileError, new_key_file
from gateway import contract
from gateway.broker_setup import bridge_user
from gateway.mqttlink import BrokerAddress
from gateway.site import SiteError, load_site

log = logging.getLogger("firmware_bridge")

WALK_IN_DELAY_S = 0.5  # how long the simulated person takes to step up after the release


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug details too.")
def main(verbose: bool) -> None:
    """Bridge between the gateway's signed decisions and OSDP turnstile controllers."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="New key file (created 0600; an existing file is never overwritten).",
)
def keygen(out: Path) -> None:
    """Write a new random controller secure channel key (SCBK)."""
    try:
        new_key_file(out)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{out}: {exc.strerror}") from None
    click.echo(f"wrote a new controller key to {out} (mode 0600); install the same key on the controller")


def _decision_keys(paths: tuple[Path, ...]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = contract.public_key_from_pem(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"{path}: {exc}", param_hint="--decision-key") from None
        keys[contract.key_id(key)] = key
    return keys


@main.command()
@click.option(
    "--site",
    "site_file",
    default="zones.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The site file.",
)
@click.option("--gate", "gate_code", required=True, help="Code of the gate this bridge drives.")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--broker-port", default=1883, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--password-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="MQTT password of the gate's bridge account (bridge.<GATE>).",
)
@click.option(
    "--decision-key",
    "decision_keys",
    required=True,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key the gateway signs decisions with (repeat during a key rotation).",
)
@click.option(
    "--simulate",
    is_flag=True,
    help="Drive a simulated turnstile in this process over a pty instead of a serial controller.",
)
@click.option("--walk-in", is_flag=True, help="With --simulate: a person walks through after every release.")
def run(
    site_file: Path,
    gate_code: str,
    broker_host: str,
    broker_port: int,
    password_file: Path,
    decision_keys: tuple[Path, ...],
    simulate: bool,
    walk_in: bool,
) -> None:
    """Run the bridge of one gate until interrupted."""
    try:
        site = load_site(site_file)
    except SiteError as exc:
        raise click.BadParameter(str(exc), param_hint="--site") from None
    if gate_code not in site.gates:
        raise click.BadParameter(f"no gate {gate_code!r} in {site_file}", param_hint="--gate")
    keys = _decision_keys(decision_keys)
    broker = BrokerAddress.from_password_file(broker_host, broker_port, bridge_user(gate_code), password_file)
    if not simulate:
        missing = (
            "the pyserial package (module 'serial') is not installed"
            if importlib.util.find_spec("serial") is None
            else "the serial line driver for real controllers is not written yet"
        )
        raise click.ClickException(
            f"driving a real turnstile controller needs a serial line, but {missing}. "
            "Use --simulate to run against a simulated turnstile."
        )

    from firmware_bridge.sim import start_simulated_gate  # imports libosdp only when it is used

    try:
        gate = start_simulated_gate(site, gate_code, keys, broker, channel="pty")
    except (TimeoutError, ConnectionError) as exc:
        raise click.ClickException(str(exc)) from None

    def on_change(old: str, new: str) -> None:
        log.info("turnstile %s: %s -> %s", gate_code, old, new)
        if walk_in and new == "released":
            # Not from this thread: it may be libosdp's, and walking through submits OSDP events.
            timer = threading.Timer(WALK_IN_DELAY_S, gate.turnstile.pass_person)
            timer.daemon = True
            timer.start()

    gate.turnstile.add_listener(on_change)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    log.info("gate %s: bridge running with a simulated turnstile; Ctrl-C to stop", gate_code)
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        gate.stop()
        log.info("gate %s: bridge stopped", gate_code)

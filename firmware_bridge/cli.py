"""Command line: `python -m firmware_bridge keygen|commission|run`. The composition root of the bridge process."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_bridge.commission import DEFAULT_WINDOW_S, MAX_WINDOW_S, MIN_WINDOW_S
from firmware_bridge.keys import KeyFileError, key_path, load_key_file, new_key_file
from firmware_bridge.metrics import BridgeMetrics
from firmware_bridge.serial_line import OSDP_BAUD_RATES
from gateway import contract, jsonlog
from gateway.broker_setup import bridge_user, bus_bridge_user
from gateway.mqttlink import BrokerAddress
from gateway.site import Gate, Site, SiteError, load_site

log = logging.getLogger("firmware_bridge")

WALK_IN_DELAY_S = 0.5  # how long the simulated person takes to step up after the release


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug details too.")
@click.option(
    "--log-format",
    type=click.Choice(jsonlog.LOG_FORMATS),
    default=lambda: os.environ.get("ACCESSGW_LOG_FORMAT", "text"),
    show_default="$ACCESSGW_LOG_FORMAT or text",
    help="json: one JSON object per line, with gate and nonce on the lines of a scan.",
)
def main(verbose: bool, log_format: str) -> None:
    """Bridge between the gateway's signed decisions and OSDP turnstile controllers."""
    jsonlog.configure(log_format, logging.DEBUG if verbose else logging.INFO, "bridge")


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
    click.echo(f"wrote a new controller key to {out} (mode 0600); install it with 'commission'")


# --- shared options ----------------------------------------------------------------------------------


def _site_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--site",
        "site_file",
        default="zones.yaml",
        show_default=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="The site file.",
    )(f)


def _serial_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--rs485",
        is_flag=True,
        help="Ask the kernel to switch the adapter's direction on RTS (adapters without automatic direction).",
    )(f)
    f = click.option(
        "--baud",
        default=9600,
        show_default=True,
        type=click.Choice([str(b) for b in OSDP_BAUD_RATES]),
        callback=lambda _c, _p, v: int(v),
        help="Line speed the controllers are set to.",
    )(f)
    return click.option("--port", help="Serial device of the RS-485 adapter (e.g. /dev/ttyUSB0) or a pyserial URL.")(f)


def _load_site(site_file: Path) -> Site:
    try:
        return load_site(site_file)
    except SiteError as exc:
        raise click.BadParameter(str(exc), param_hint="--site") from None


def _controlled_gate(site: Site, code: str, site_file: Path) -> Gate:
    gate = site.gates.get(code)
    if gate is None:
        raise click.BadParameter(f"no gate {code!r} in {site_file}", param_hint="--gate")
    if gate.controller is None:
        raise click.BadParameter(f"gate {code!r} has no controller in {site_file}", param_hint="--gate")
    return gate


def _open_serial(port: str, baud: int, rs485: bool) -> Any:
    import serial

    from firmware_bridge.serial_line import SerialChannel

    try:
        return SerialChannel(port, baud, rs485=rs485)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot open the serial line {port}: {exc}") from None


def _reader_keys(site: Site, gates: list[Gate], specs: tuple[str, ...]) -> dict[str, Ed25519PublicKey]:
    """READER=PEM pairs: offline public keys of readers of the bridge's gates (others are refused)."""
    ours = {r.code for r in site.readers.values() if r.gate in {g.code for g in gates}}
    keys: dict[str, Ed25519PublicKey] = {}
    for spec in specs:
        reader, sep, path = spec.partition("=")
        if not sep or reader not in ours:
            why = f"{spec!r}: expected READER=PEM for a reader of this bridge's gates"
            raise click.BadParameter(why, param_hint="--reader-key")
        try:
            keys[reader] = contract.public_key_from_pem(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"{path}: {exc}", param_hint="--reader-key") from None
    return keys


def _decision_keys(paths: tuple[Path, ...]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = contract.public_key_from_pem(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"{path}: {exc}", param_hint="--decision-key") from None
        keys[contract.key_id(key)] = key
    return keys


# --- commission --------------------------------------------------------------------------------------


@main.command()
@_site_option
@click.option("--gate", "gate_code", required=True, help="Gate whose controller is commissioned.")
@_serial_options
@click.option(
    "--key-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Key folder: the controller's key is <GATE>.scbk there, made now if missing.",
)
@click.option(
    "--window",
    "window_s",
    default=DEFAULT_WINDOW_S,
    show_default=True,
    type=click.IntRange(MIN_WINDOW_S, MAX_WINDOW_S),
    help="Seconds during which the default install key may be used; then the attempt ends.",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where each attempt is recorded (default: commissioning.log in the key folder).",
)
def commission(
    site_file: Path,
    gate_code: str,
    port: str | None,
    baud: int,
    rs485: bool,
    key_dir: Path,
    window_s: int,
    journal: Path | None,
) -> None:
    """Give a controller in install mode its own key (KEYSET over the default key), within a time box.

    Run it with the bridge of that bus stopped, after putting the controller in install mode. Works also on a
    controller that already has the key (it proves it). Never sends the controller any other command.
    """
    from firmware_bridge.commission import append_journal, journal_record
    from firmware_bridge.commission import commission as run_commissioning

    site = _load_site(site_file)
    gate = _controlled_gate(site, gate_code, site_file)
    assert gate.controller is not None
    if not port:
        raise click.BadParameter("the serial device of the controller's bus is needed", param_hint="--port")
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = key_path(key_dir, gate.code)
    try:
        if not path.exists():
            new_key_file(path)
            log.info("made a new key for %s in %s", gate.code, path)
        key = load_key_file(path)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    channel = _open_serial(port, baud, rs485)
    try:
        outcome = run_commissioning(channel, gate.controller.address, key, window_s)
    finally:
        channel.close()
    record = journal_record(gate.code, gate.controller.address, port, key, outcome, window_s)
    append_journal(journal or key_dir / "commissioning.log", record)
    if outcome.ok:
        log.warning("commissioned %s (address %d): %s", gate.code, gate.controller.address, outcome.detail)
        click.echo(f"{gate.code}: controller {gate.controller.address} now uses its own key ({outcome.detail})")
        return
    log.error("commissioning %s failed: %s", gate.code, outcome.detail)
    raise click.ClickException(f"{gate.code}: controller {gate.controller.address} not commissioned: {outcome.detail}")


# --- run ---------------------------------------------------------------------------------------------


@main.command()
@_site_option
@click.option("--gate", "gate_code", help="Code of the gate this bridge drives (a gate alone on its bus).")
@click.option("--bus", help="Drive every gate whose controller is on this bus (zones.yaml controller.bus).")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--broker-port", default=1883, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--password-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="MQTT password of the bridge's account (bridge.<GATE>, or bridge-bus.<BUS> with --bus).",
)
@click.option(
    "--decision-key",
    "decision_keys",
    required=True,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key the gateway signs decisions with (repeat during a key rotation).",
)
@_serial_options
@click.option(
    "--key-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of the controllers' keys (<GATE>.scbk, owner-only).",
)
@click.option(
    "--outbox",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file keeping events until the gateway has them (default: outbox-<GATE|BUS>.sqlite in --key-dir).",
)
@click.option(
    "--simulate",
    is_flag=True,
    help="Drive simulated turnstiles in this process instead of real controllers.",
)
@click.option("--walk-in", is_flag=True, help="With --simulate: a person walks through after every release.")
@click.option(
    "--reader-key",
    "reader_key_specs",
    multiple=True,
    metavar="READER=PEM",
    help="A reader's offline public key (its FILE.pub.pem from `python -m readers keygen`): the bridge then accepts "
    "that reader's offline answers at a verify_locally gate. Repeat for each reader of the gate.",
)
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, help="Serve Prometheus /metrics here.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address the metrics port listens on.")
@click.option(
    "--status-every",
    "status_every_s",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between the bridge's retained status heartbeats (outbox length, controller links).",
)
def run(
    site_file: Path,
    gate_code: str | None,
    bus: str | None,
    broker_host: str,
    broker_port: int,
    password_file: Path,
    decision_keys: tuple[Path, ...],
    port: str | None,
    baud: int,
    rs485: bool,
    key_dir: Path | None,
    outbox: Path | None,
    simulate: bool,
    walk_in: bool,
    metrics_port: int | None,
    metrics_host: str,
    reader_key_specs: tuple[str, ...] = (),
    status_every_s: float = 5.0,
) -> None:
    """Run the bridge of one gate, or of every gate of one bus, until interrupted."""
    site = _load_site(site_file)
    if (gate_code is None) == (bus is None):
        raise click.UsageError("give either --gate or --bus")
    if gate_code is not None:
        gates = [_controlled_gate(site, gate_code, site_file)]
        name, user = gate_code, bridge_user(gate_code)
    else:
        assert bus is not None
        gates = [g for g in site.gates.values() if g.controller is not None and g.controller.bus == bus]
        if not gates:
            raise click.BadParameter(f"no gate in {site_file} has its controller on bus {bus!r}", param_hint="--bus")
        name, user = bus, bus_bridge_user(bus)
    keys = _decision_keys(decision_keys)
    reader_keys = _reader_keys(site, gates, reader_key_specs)
    broker = BrokerAddress.from_password_file(broker_host, broker_port, user, password_file)
    if not simulate and (not port or key_dir is None):
        raise click.UsageError(
            "a real bus needs --port (the RS-485 adapter) and --key-dir (the controllers' keys); "
            "or use --simulate to drive simulated turnstiles"
        )
    metrics = BridgeMetrics()
    stop_metrics = _serve_metrics(metrics, metrics_host, metrics_port)
    try:
        if simulate:
            _run_simulated(
                site,
                gates,
                bus,
                keys,
                broker,
                outbox,
                walk_in,
                metrics,
                reader_keys=reader_keys,
                status_every_s=status_every_s,
            )
        else:
            assert port is not None and key_dir is not None
            _run_real(
                site,
                gates,
                keys,
                broker,
                port,
                baud,
                rs485,
                key_dir,
                outbox or key_dir / f"outbox-{name}.sqlite",
                metrics,
                reader_keys=reader_keys,
                status_every_s=status_every_s,
            )
    finally:
        stop_metrics()


def _run_real(
    site: Site,
    gates: list[Gate],
    decision_keys: dict[str, Ed25519PublicKey],
    broker: BrokerAddress,
    port: str,
    baud: int,
    rs485: bool,
    key_dir: Path,
    outbox_path: Path,
    metrics: BridgeMetrics,
    reader_keys: dict[str, Ed25519PublicKey] | None = None,
    status_every_s: float = 5.0,
) -> None:
    from firmware_bridge.bridge import Bridge
    from firmware_bridge.controller import ControllerLink
    from firmware_bridge.outbox import EventOutbox

    controllers: dict[int, bytes] = {}
    for gate in gates:
        assert gate.controller is not None
        try:
            controllers[gate.controller.address] = load_key_file(key_path(key_dir, gate.code))
        except KeyFileError as exc:
            raise click.ClickException(
                f"gate {gate.code}: {exc} (make and install it with keygen/commission)"
            ) from None
    channel = _open_serial(port, baud, rs485)
    held = {g.controller.address: float(g.passage_timeout_s) for g in gates if g.controller is not None}
    link = ControllerLink(channel, controllers, held_open_s=held)
    events = EventOutbox(outbox_path)
    bridge = Bridge(
        site,
        [g.code for g in gates],
        link,
        decision_keys,
        broker,
        events,
        on_outcome=metrics.on_outcome,
        reader_keys=reader_keys,
        status_every_s=status_every_s,
    )
    try:
        # Listen before the link starts, so no controller report is missed; events wait for the broker.
        bridge.start(require_broker=False)
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    link.start()
    metrics.watch(bridge, events, link, _addresses(gates))
    log.info(
        "bridge running on %s for %s; %d event(s) waiting in %s",
        port,
        ", ".join(controllers_of(gates)),
        len(events),
        outbox_path,
    )
    try:
        _wait_for_signal()
    finally:
        bridge.stop()
        link.stop()
        channel.close()
        events.close()
        log.info("bridge stopped")


def controllers_of(gates: list[Gate]) -> list[str]:
    return [f"{g.code}@{g.controller.address}" for g in gates if g.controller is not None]


def _run_simulated(
    site: Site,
    gates: list[Gate],
    bus: str | None,
    decision_keys: dict[str, Ed25519PublicKey],
    broker: BrokerAddress,
    outbox: Path | None,
    walk_in: bool,
    metrics: BridgeMetrics,
    reader_keys: dict[str, Ed25519PublicKey] | None = None,
    status_every_s: float = 5.0,
) -> None:
    from firmware_bridge.outbox import MEMORY
    from firmware_bridge.sim import start_simulated_bus, start_simulated_gate

    try:
        if bus is None:
            sim = start_simulated_gate(
                site,
                gates[0].code,
                decision_keys,
                broker,
                channel="pty",
                outbox=outbox or MEMORY,
                on_outcome=metrics.on_outcome,
                reader_keys=reader_keys,
                status_every_s=status_every_s,
            )
        else:
            sim = start_simulated_bus(
                site,
                bus,
                decision_keys,
                broker,
                outbox=outbox or MEMORY,
                on_outcome=metrics.on_outcome,
                reader_keys=reader_keys,
                status_every_s=status_every_s,
            )
    except (TimeoutError, ConnectionError) as exc:
        raise click.ClickException(str(exc)) from None
    metrics.watch(sim.bridge, sim.outbox, sim.link, _addresses(gates))

    for code, turnstile in sim.turnstiles.items():

        def on_change(old: str, new: str, code: str = code, turnstile: Any = turnstile) -> None:
            log.info("turnstile %s: %s -> %s", code, old, new)
            if walk_in and new == "released":
                # Not from this thread: it may be libosdp's, and walking through submits OSDP events.
                timer = threading.Timer(WALK_IN_DELAY_S, turnstile.pass_person)
                timer.daemon = True
                timer.start()

        turnstile.add_listener(on_change)
    log.info("bridge running with simulated turnstiles for %s; Ctrl-C to stop", ", ".join(sim.turnstiles))
    try:
        _wait_for_signal()
    finally:
        sim.stop()
        log.info("bridge stopped")


def _addresses(gates: list[Gate]) -> dict[str, int]:
    return {g.code: g.controller.address for g in gates if g.controller is not None}


def _serve_metrics(metrics: BridgeMetrics, host: str, port: int | None) -> Callable[[], None]:
    """Serve the bridge's metrics on `port` (None: counted, not served); returns how to stop serving them."""
    if port is None:
        return lambda: None
    from gateway.metrics_server import serve

    try:
        return serve(metrics.registry, host, port).stop
    except OSError as exc:
        raise click.ClickException(f"metrics port {port}: {exc}") from None


def _wait_for_signal() -> None:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass

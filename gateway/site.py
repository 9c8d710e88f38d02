"""The site as zones.yaml describes it: zones, gates, readers and their rules.

Pure: PyYAML and the standard library only, so readers and bridges can load the same file. The loader
refuses a bad file with a `SiteError` whose message names the key path and what is wrong.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

OUTSIDE = "outside"  # the reserved from-zone of a perimeter gate: the public side, not a zone of ours
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ANTI_PASSBACK_MODES = ("none", "soft", "hard", "timed")
OFFLINE_POLICIES = ("deny_all", "verify_locally")
ZONE_ACCESS = ("explicit", "inherit")
GATE_DIRECTIONS = ("one_way", "two_way")
READER_SIDES = ("in", "out")
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}\Z")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d\Z|^24:00\Z")
_BADGE_CODE = re.compile(r"^[A-Z0-9]{1,3}\Z")  # printed large on the card and written in the QR: keep it tiny


class SiteError(ValueError):
    """zones.yaml is invalid; the message names the key and the problem."""


@dataclass(frozen=True)
class TimeWindow:
    days: tuple[str, ...]
    start: dt.time
    end: dt.time  # 24:00 is stored as time.max

    def contains(self, local: dt.datetime) -> bool:
        t = local.time()
        # `end` is exclusive, except 24:00 (time.max), which must still hold the day's last microsecond
        before_end = t < self.end or self.end == dt.time.max
        return DAYS[local.weekday()] in self.days and self.start <= t and before_end

    @classmethod
    def weekly(cls, days: str, starts: str, ends: str) -> TimeWindow:
        """From stored text: space-separated days, HH:MM, and HH:MM or 24:00."""
        end = dt.time.max if ends == "24:00" else dt.time.fromisoformat(ends)
        return cls(days=tuple(days.split()), start=dt.time.fromisoformat(starts), end=end)


@dataclass(frozen=True)
class ThreatRule:
    closed: bool = False
    roles: tuple[str, ...] = ()  # empty: every role
    requires: tuple[str, ...] = ()  # qualifications on top of the zone's own


@dataclass(frozen=True)
class Zone:
    code: str
    name: str
    parent: str | None
    access: str = "explicit"  # "inherit": a badge for any ancestor zone also opens this one
    schedule: tuple[TimeWindow, ...] = ()  # empty: always open
    requires: tuple[str, ...] = ()
    anti_passback: str = "none"
    anti_passback_minutes: int = 0
    capacity: int | None = None
    threat_levels: Mapping[str, ThreatRule] = field(default_factory=dict)
    badge_code: str = ""  # short code written in badges and printed on cards; "" means the zone code itself

    @property
    def on_badge(self) -> str:
        """What a badge writes and prints for this zone."""
        return self.badge_code or self.code


@dataclass(frozen=True)
class Controller:
    bus: str
    address: int


@dataclass(frozen=True)
class Gate:
    code: str
    name: str
    from_zone: str
    to_zone: str
    direction: str
    relay_pulse_ms: int
    passage_timeout_s: int
    offline_policy: str
    controller: Controller | None


@dataclass(frozen=True)
class Reader:
    code: str
    gate: str
    side: str  # "in": from-zone to to-zone; "out": back


@dataclass(frozen=True)
class Site:
    code: str
    name: str
    timezone: str
    threat_levels: tuple[str, ...]
    default_threat_level: str
    qualifications: tuple[str, ...]
    roles: tuple[str, ...]
    zones: Mapping[str, Zone]
    gates: Mapping[str, Gate]
    readers: Mapping[str, Reader]

    @functools.cached_property
    def zone_for_badge_code(self) -> dict[str, str]:
        """Badge code (or zone code, for zones without one) -> zone code: how a badge's `zn` is read back."""
        return {zone.on_badge: zone.code for zone in self.zones.values()}

    def ancestors(self, zone_code: str) -> list[str]:
        """Parent chain of a zone, nearest first."""
        chain: list[str] = []
        parent = self.zones[zone_code].parent
        while parent is not None:
            chain.append(parent)
            parent = self.zones[parent].parent
        return chain

    def target_zone(self, reader: Reader) -> str:
        """The zone a person enters by passing this reader's side of its gate."""
        gate = self.gates[reader.gate]
        return gate.to_zone if reader.side == "in" else gate.from_zone


# --- loading -----------------------------------------------------------------------------------------

Checker = Callable[[Any, str], Any]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SiteError(f"{path}: expected a non-empty string, got {_type_name(value)} {value!r}")
    return value


def _code(value: Any, path: str) -> str:
    text = _str(value, path)
    if not _CODE.match(text):
        raise SiteError(f"{path}: {text!r} is not a valid code (letters, digits, '_', '.', '-'; 1-48 chars)")
    return text


def _int(minimum: int, maximum: int) -> Checker:
    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SiteError(f"{path}: expected an integer, got {_type_name(value)} {value!r}")
        if not minimum <= value <= maximum:
            raise SiteError(f"{path}: {value} is out of range {minimum}..{maximum}")
        return value

    return check


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SiteError(f"{path}: expected true or false, got {_type_name(value)} {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Checker:
    def check(value: Any, path: str) -> str:
        if value not in options:
            raise SiteError(f"{path}: {value!r} is not one of {', '.join(options)}")
        return str(value)

    return check


def _list(item: Checker) -> Checker:
    def check(value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise SiteError(f"{path}: expected a list, got {_type_name(value)} {value!r}")
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

    return check


def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SiteError(f"{path}: expected a mapping, got {_type_name(value)}")
    return value


def _fields(value: Any, path: str, required: dict[str, Checker], optional: dict[str, Checker]) -> dict[str, Any]:
    """Check a mapping's keys against a schema: unknown keys and missing required keys are errors."""
    data = _mapping(value, path)
    for key in data:
        if key not in required and key not in optional:
            known = ", ".join(sorted([*required, *optional]))
            raise SiteError(f"{path}.{key}: unknown field (known fields: {known})")
    out: dict[str, Any] = {}
    for key, check in required.items():
        if key not in data:
            raise SiteError(f"{path}.{key}: required field is missing")
        out[key] = check(data[key], f"{path}.{key}")
    for key, check in optional.items():
        if key in data:
            out[key] = check(data[key], f"{path}.{key}")
    return out


def _hhmm(value: Any, path: str) -> dt.time:
    text = _str(value, path)
    if not _HHMM.match(text):
        raise SiteError(f"{path}: {text!r} is not a time of day HH:MM")
    return dt.time.max if text == "24:00" else dt.time.fromisoformat(text)


def _window(value: Any, path: str) -> TimeWindow:
    data = _fields(value, path, {"days": _list(_choice(DAYS)), "from": _hhmm, "to": _hhmm}, {})
    if data["to"] <= data["from"]:
        raise SiteError(f"{path}.to: must be later than 'from' (split a window that crosses midnight in two)")
    return TimeWindow(days=data["days"], start=data["from"], end=data["to"])


def _unique_codes(items: list[dict[str, Any]], path: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        code = item["code"]
        if code in seen:
            raise SiteError(f"{path}[{i}].code: duplicate code {code!r} (also {path}[{seen[code]}])")
        seen[code] = i


def load_site(path: str | Path) -> Site:
    """Read and validate a zones.yaml file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteError(f"{p}: cannot read the site file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SiteError(f"{p}: not UTF-8 text (byte {exc.start})") from exc
    return parse_site(text, source=str(p))


def parse_site(text: str, source: str = "zones.yaml") -> Site:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SiteError(f"{source}: not valid YAML: {exc}") from exc
    try:
        return _build_site(raw)
    except SiteError as exc:
        raise SiteError(f"{source}: {exc}") from None


def _build_site(raw: Any) -> Site:
    top = _fields(
        raw,
        "$",
        {
            "site": _mapping,
            "threat_levels": _list(_code),
            "zones": _list(_mapping),
            "gates": _list(_mapping),
            "readers": _list(_mapping),
        },
        {"qualifications": _list(_code), "roles": _list(_code)},
    )
    head = _fields(
        top["site"],
        "site",
        {"code": _code, "name": _str, "timezone": _str},
        {"default_threat_level": _code},
    )
    _check_timezone(head["timezone"])
    levels: tuple[str, ...] = top["threat_levels"]
    if not levels:
        raise SiteError("threat_levels: at least one level is needed")
    if len(set(levels)) != len(levels):
        raise SiteError("threat_levels: duplicate level")
    default_level = head.get("default_threat_level", levels[0])
    if default_level not in levels:
        raise SiteError(f"site.default_threat_level: {default_level!r} is not one of threat_levels")
    qualifications: tuple[str, ...] = top.get("qualifications", ())
    roles: tuple[str, ...] = top.get("roles", ())

    zones = _build_zones(top["zones"], levels, qualifications, roles)
    gates = _build_gates(top["gates"], zones)
    readers = _build_readers(top["readers"], gates)
    return Site(
        code=head["code"],
        name=head["name"],
        timezone=head["timezone"],
        threat_levels=levels,
        default_threat_level=default_level,
        qualifications=qualifications,
        roles=roles,
        zones=zones,
        gates=gates,
        readers=readers,
    )


def _check_timezone(name: str) -> None:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SiteError(f"site.timezone: unknown time zone {name!r}") from None


def _known(options: tuple[str, ...], what: str) -> Checker:
    """A code that must be declared in a top-level list (when that list is given)."""

    def check(value: Any, path: str) -> str:
        code = _code(value, path)
        if options and code not in options:
            raise SiteError(f"{path}: unknown {what} {code!r}")
        return code

    return check


def _build_zones(
    items: tuple[dict[str, Any], ...], levels: tuple[str, ...], quals: tuple[str, ...], roles: tuple[str, ...]
) -> dict[str, Zone]:
    threat_rule_fields: dict[str, Checker] = {
        "closed": _bool,
        "roles": _list(_known(roles, "role")),
        "requires": _list(_known(quals, "qualification")),
    }
    parsed: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        path = f"zones[{i}]"
        data = _fields(
            item,
            path,
            {"code": _code, "name": _str},
            {
                "parent": _code,
                "access": _choice(ZONE_ACCESS),
                "schedule": _list(_window),
                "requires": _list(_known(quals, "qualification")),
                "anti_passback": _choice(ANTI_PASSBACK_MODES),
                "anti_passback_minutes": _int(1, 24 * 60),
                "capacity": _int(1, 10_000_000),
                "threat_levels": _mapping,
                "badge_code": _badge_code,
            },
        )
        if data["code"] == OUTSIDE:
            raise SiteError(f"{path}.code: {OUTSIDE!r} is reserved for the public side of perimeter gates")
        rules: dict[str, ThreatRule] = {}
        for level, rule in data.get("threat_levels", {}).items():
            if level not in levels:
                raise SiteError(f"{path}.threat_levels.{level}: unknown threat level (known: {', '.join(levels)})")
            r = _fields(rule, f"{path}.threat_levels.{level}", {}, threat_rule_fields)
            rules[level] = ThreatRule(**r)
        data["threat_levels"] = rules
        mode = data.get("anti_passback", "none")
        if mode == "timed" and "anti_passback_minutes" not in data:
            raise SiteError(f"{path}.anti_passback_minutes: required when anti_passback is 'timed'")
        if mode != "timed" and "anti_passback_minutes" in data:
            raise SiteError(f"{path}.anti_passback_minutes: only meaningful when anti_passback is 'timed'")
        parsed.append(data)
    _unique_codes(parsed, "zones")
    _unique_badge_codes(parsed)

    codes = {d["code"]: i for i, d in enumerate(parsed)}
    for i, data in enumerate(parsed):
        parent = data.get("parent")
        if parent is not None and parent not in codes:
            raise SiteError(f"zones[{i}].parent: unknown zone {parent!r}")
    for i, data in enumerate(parsed):
        chain = [data["code"]]
        parent = data.get("parent")
        while parent is not None:
            if parent in chain:
                cycle = " -> ".join([*chain[chain.index(parent) :], parent])
                raise SiteError(f"zones[{i}].parent: cycle in the zone hierarchy: {cycle}")
            chain.append(parent)
            parent = parsed[codes[parent]].get("parent")

    return {
        d["code"]: Zone(
            code=d["code"],
            name=d["name"],
            parent=d.get("parent"),
            access=d.get("access", "explicit"),
            schedule=d.get("schedule", ()),
            requires=d.get("requires", ()),
            anti_passback=d.get("anti_passback", "none"),
            anti_passback_minutes=d.get("anti_passback_minutes", 0),
            capacity=d.get("capacity"),
            threat_levels=d["threat_levels"],
            badge_code=d.get("badge_code", ""),
        )
        for d in parsed
    }


def _badge_code(value: Any, path: str) -> str:
    text = _str(value, path)
    if not _BADGE_CODE.match(text):
        raise SiteError(f"{path}: {text!r} is not a badge code (1 to 3 capital letters or digits)")
    return text


def _unique_badge_codes(parsed: list[dict[str, Any]]) -> None:
    """A badge code must name one zone only, and never another zone's own code (a badge could say either)."""
    seen: dict[str, str] = {}
    zone_codes = {d["code"] for d in parsed}
    for i, data in enumerate(parsed):
        code = data.get("badge_code")
        if code is None:
            continue
        if code in seen:
            raise SiteError(f"zones[{i}].badge_code: {code!r} is already the badge code of zone {seen[code]!r}")
        if code in zone_codes and code != data["code"]:
            raise SiteError(f"zones[{i}].badge_code: {code!r} is the code of another zone")
        seen[code] = data["code"]


def _build_gates(items: tuple[dict[str, Any], ...], zones: Mapping[str, Zone]) -> dict[str, Gate]:
    parsed: list[dict[str, Any]] = []
    buses: dict[tuple[str, int], str] = {}
    for i, item in enumerate(items):
        path = f"gates[{i}]"
        data = _fields(
            item,
            path,
            {"code": _code, "name": _str, "from": _code, "to": _code},
            {
                "direction": _choice(GATE_DIRECTIONS),
                "relay_pulse_ms": _int(100, 30_000),
                "passage_timeout_s": _int(1, 300),
                "offline_policy": _choice(OFFLINE_POLICIES),
                "controller": _mapping,
            },
        )
        for key in ("from", "to"):
            if data[key] != OUTSIDE and data[key] not in zones:
                raise SiteError(f"{path}.{key}: unknown zone {data[key]!r}")
        if data["to"] == OUTSIDE:
            raise SiteError(f"{path}.to: a gate leads into a zone; use 'from: {OUTSIDE}' for perimeter gates")
        if data["from"] == data["to"]:
            raise SiteError(f"{path}.to: a gate cannot lead from a zone into itself")
        controller = None
        if "controller" in data:
            c = _fields(data["controller"], f"{path}.controller", {"bus": _code, "address": _int(0, 126)}, {})
            bus_key = (c["bus"], c["address"])
            if bus_key in buses:
                raise SiteError(
                    f"{path}.controller.address: bus {c['bus']!r} address {c['address']} "
                    f"is already used by gate {buses[bus_key]!r}"
                )
            buses[bus_key] = data["code"]
            controller = Controller(bus=c["bus"], address=c["address"])
        data["controller"] = controller
        parsed.append(data)
    _unique_codes(parsed, "gates")
    return {
        d["code"]: Gate(
            code=d["code"],
            name=d["name"],
            from_zone=d["from"],
            to_zone=d["to"],
            direction=d.get("direction", "one_way"),
            relay_pulse_ms=d.get("relay_pulse_ms", 1000),
            passage_timeout_s=d.get("passage_timeout_s", 8),
            offline_policy=d.get("offline_policy", "deny_all"),
            controller=d["controller"],
        )
        for d in parsed
    }


def _build_readers(items: tuple[dict[str, Any], ...], gates: Mapping[str, Gate]) -> dict[str, Reader]:
    parsed: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        path = f"readers[{i}]"
        data = _fields(item, path, {"code": _code, "gate": _code}, {"side": _choice(READER_SIDES)})
        gate = gates.get(data["gate"])
        if gate is None:
            raise SiteError(f"{path}.gate: unknown gate {data['gate']!r}")
        side = data.get("side", "in")
        if side == "out" and gate.direction == "one_way":
            raise SiteError(f"{path}.side: gate {gate.code!r} is one_way; a reader cannot pass it outwards")
        data["side"] = side
        parsed.append(data)
    _unique_codes(parsed, "readers")
    return {d["code"]: Reader(code=d["code"], gate=d["gate"], side=d["side"]) for d in parsed}

"""zones.yaml: the sample site loads, and every bad file is refused, naming the key path and the problem."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.site import OUTSIDE, Site, SiteError, load_site, parse_site

ROOT = Path(__file__).resolve().parent.parent
SITE_FILE = ROOT / "zones.yaml"
DOC_FILE = ROOT / "docs" / "zones.md"

Doc = dict[str, Any]
Edit = Callable[[Doc], Any]  # returns the document to parse


def sample() -> Doc:
    """A fresh, mutable copy of the sample site."""
    doc = yaml.safe_load(SITE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def parse(doc: Any) -> Site:
    return parse_site(yaml.safe_dump(doc, sort_keys=False), source="zones.yaml")


# --- the sample site -----------------------------------------------------------------------------------


def test_sample_site_counts(site: Site) -> None:
    assert (len(site.zones), len(site.gates), len(site.readers)) == (10, 10, 15)


def test_sample_site_head(site: Site) -> None:
    assert (site.code, site.timezone, site.default_threat_level) == ("PAR24", "Europe/Paris", "vigilance")
    assert site.threat_levels == ("vigilance", "heightened", "emergency")


def test_ancestors_of_the_field_nearest_first(site: Site) -> None:
    assert site.ancestors("STADIUM-FIELD") == ["STADIUM-BOWL", "STADIUM-CONCOURSE", "STADIUM-PERIMETER"]


def test_ancestors_of_a_top_zone_are_empty(site: Site) -> None:
    assert site.ancestors("STADIUM-PERIMETER") == []


@pytest.mark.parametrize(
    ("reader", "zone"),
    [
        ("STA-G1-IN", "STADIUM-PERIMETER"),
        ("STA-G1-OUT", OUTSIDE),
        ("STA-G3-IN", "STADIUM-BOWL"),
        ("STA-G3-OUT", "STADIUM-CONCOURSE"),
        ("GDN-G2-IN", "STATION-PLATFORMS"),
        ("CDG-G2-OUT", "AIRPORT-LANDSIDE"),
    ],
)
def test_target_zone(site: Site, reader: str, zone: str) -> None:
    assert site.target_zone(site.readers[reader]) == zone


def test_gate_defaults_apply(site: Site) -> None:
    gate = site.gates["STA-G3"]  # sets neither relay_pulse_ms nor passage_timeout_s
    assert (gate.relay_pulse_ms, gate.passage_timeout_s) == (1000, 8)


def test_zone_defaults_apply(site: Site) -> None:
    zone = site.zones["AIRPORT-LANDSIDE"]
    assert (zone.parent, zone.access, zone.schedule, zone.requires, zone.capacity) == (
        None,
        "explicit",
        (),
        (),
        None,
    )


def test_reader_side_defaults_to_in() -> None:
    doc = sample()
    del doc["readers"][0]["side"]
    assert parse(doc).readers["STA-G1-IN"].side == "in"


def test_gate_direction_defaults_to_one_way() -> None:
    doc = sample()
    del doc["gates"][6]["direction"]  # GDN-G1, whose only reader is an 'in' reader
    assert parse(doc).gates["GDN-G1"].direction == "one_way"


def test_default_threat_level_defaults_to_the_first_level() -> None:
    doc = sample()
    del doc["site"]["default_threat_level"]
    doc["threat_levels"] = ["heightened", "vigilance", "emergency"]
    assert parse(doc).default_threat_level == "heightened"


def test_threat_rule_is_loaded(site: Site) -> None:
    rule = site.zones["STADIUM-VIP"].threat_levels["heightened"]
    assert (rule.closed, rule.roles, rule.requires) == (
        False,
        ("police", "gendarme", "supervisor", "private_guard"),
        ("firearm_authorisation",),
    )


def test_controller_is_loaded(site: Site) -> None:
    controller = site.gates["STA-G4"].controller
    assert controller is not None
    assert (controller.bus, controller.address) == ("stadium-south", 1)


def test_gate_without_controller_is_accepted() -> None:
    doc = sample()
    del doc["gates"][0]["controller"]
    assert parse(doc).gates["STA-G1"].controller is None


def test_roles_and_qualifications_are_free_when_not_declared() -> None:
    doc = sample()
    del doc["roles"]
    del doc["qualifications"]
    doc["zones"][3]["requires"] = ["anything_goes"]
    assert parse(doc).zones["STADIUM-FIELD"].requires == ("anything_goes",)


# --- schedules -----------------------------------------------------------------------------------------

_SAT = dt.date(2024, 7, 27)  # a Saturday


@pytest.mark.parametrize(
    ("zone", "when", "inside"),
    [
        ("STADIUM-VIP", dt.datetime.combine(_SAT, dt.time(10, 0)), True),  # start is inclusive
        ("STADIUM-VIP", dt.datetime.combine(_SAT, dt.time(23, 29, 59)), True),
        ("STADIUM-VIP", dt.datetime.combine(_SAT, dt.time(23, 30)), False),  # end is exclusive
        ("STADIUM-VIP", dt.datetime.combine(_SAT, dt.time(9, 59, 59)), False),
        ("STADIUM-VIP", dt.datetime.combine(_SAT - dt.timedelta(days=3), dt.time(12, 0)), False),  # Wed
        ("STADIUM-CONCOURSE", dt.datetime.combine(_SAT, dt.time(23, 59, 59, 999_999)), True),  # 24:00
        ("STADIUM-CONCOURSE", dt.datetime.combine(_SAT, dt.time(5, 59)), False),
    ],
)
def test_schedule_window_contains(site: Site, zone: str, when: dt.datetime, inside: bool) -> None:
    (window,) = site.zones[zone].schedule
    assert window.contains(when) is inside


def test_schedule_24_00_is_end_of_day(site: Site) -> None:
    (window,) = site.zones["STADIUM-CONCOURSE"].schedule
    assert window.end == dt.time.max


# --- refusals ------------------------------------------------------------------------------------------


def put(*path_and_value: Any) -> Edit:
    """An edit that sets doc[k1][k2]...[kn] = value, given k1, k2, ..., kn, value."""
    *path, value = path_and_value

    def edit(doc: Doc) -> Doc:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return doc

    return edit


def drop(*path: str | int) -> Edit:
    """An edit that deletes doc[path...]."""

    def edit(doc: Doc) -> Doc:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return doc

    return edit


def append(section: str, item: Any) -> Edit:
    def edit(doc: Doc) -> Doc:
        doc[section].append(item(doc) if callable(item) else item)
        return doc

    return edit


def replace(new: Any) -> Edit:
    """An edit that swaps the whole document for `new`."""
    return lambda _doc: new


def _copy(section: str, index: int, **changes: Any) -> Callable[[Doc], Doc]:
    return lambda doc: {**doc[section][index], **changes}


REFUSALS = [
    # unknown references
    pytest.param(
        put("gates", 1, "from", "NOWHERE"), "gates[1].from", "unknown zone 'NOWHERE'", id="gate-from"
    ),
    pytest.param(put("gates", 1, "to", "NOWHERE"), "gates[1].to", "unknown zone 'NOWHERE'", id="gate-to"),
    pytest.param(
        put("zones", 2, "parent", "NOWHERE"), "zones[2].parent", "unknown zone 'NOWHERE'", id="parent"
    ),
    pytest.param(
        put("readers", 3, "gate", "NO-GATE"), "readers[3].gate", "unknown gate 'NO-GATE'", id="reader-gate"
    ),
    # cycles
    pytest.param(
        put("zones", 0, "parent", "STADIUM-CONCOURSE"),
        "zones[0].parent",
        "cycle in the zone hierarchy: STADIUM-PERIMETER -> STADIUM-CONCOURSE -> STADIUM-PERIMETER",
        id="cycle-2",
    ),
    pytest.param(
        put("zones", 0, "parent", "STADIUM-BOWL"),
        "zones[0].parent",
        "cycle in the zone hierarchy: "
        "STADIUM-PERIMETER -> STADIUM-BOWL -> STADIUM-CONCOURSE -> STADIUM-PERIMETER",
        id="cycle-3",
    ),
    pytest.param(
        put("zones", 8, "parent", "AIRPORT-LANDSIDE"),
        "zones[8].parent",
        "cycle in the zone hierarchy: AIRPORT-LANDSIDE -> AIRPORT-LANDSIDE",
        id="cycle-self",
    ),
    # duplicates
    pytest.param(
        append("zones", _copy("zones", 8)),
        "zones[10].code",
        "duplicate code 'AIRPORT-LANDSIDE' (also zones[8])",
        id="duplicate-zone",
    ),
    pytest.param(
        append("gates", _copy("gates", 6, controller={"bus": "station", "address": 9})),
        "gates[10].code",
        "duplicate code 'GDN-G1' (also gates[6])",
        id="duplicate-gate",
    ),
    pytest.param(
        append("readers", _copy("readers", 0)),
        "readers[15].code",
        "duplicate code 'STA-G1-IN' (also readers[0])",
        id="duplicate-reader",
    ),
    pytest.param(
        put("gates", 1, "controller", "address", 1),
        "gates[1].controller.address",
        "bus 'stadium-north' address 1 is already used by gate 'STA-G1'",
        id="duplicate-bus-address",
    ),
    pytest.param(
        put("threat_levels", ["vigilance", "heightened", "vigilance"]),
        "threat_levels",
        "duplicate level",
        id="duplicate-threat-level",
    ),
    # unknown fields
    pytest.param(put("zone", []), "$.zone", "unknown field", id="unknown-top"),
    pytest.param(put("site", "tz", "UTC"), "site.tz", "unknown field", id="unknown-site"),
    pytest.param(put("zones", 3, "capacty", 10), "zones[3].capacty", "unknown field", id="unknown-zone"),
    pytest.param(put("gates", 2, "relay_ms", 900), "gates[2].relay_ms", "unknown field", id="unknown-gate"),
    pytest.param(
        put("gates", 0, "controller", "port", 1883),
        "gates[0].controller.port",
        "unknown field",
        id="unknown-controller",
    ),
    pytest.param(
        put("zones", 3, "threat_levels", "emergency", "close", True),
        "zones[3].threat_levels.emergency.close",
        "unknown field",
        id="unknown-threat-rule",
    ),
    pytest.param(
        put("zones", 1, "schedule", 0, "hours", 3),
        "zones[1].schedule[0].hours",
        "unknown field",
        id="unknown-window",
    ),
    pytest.param(
        put("readers", 0, "direction", "in"), "readers[0].direction", "unknown field", id="unknown-reader"
    ),
    # missing fields
    pytest.param(
        drop("zones", 4, "name"), "zones[4].name", "required field is missing", id="missing-zone-name"
    ),
    pytest.param(drop("gates", 3, "to"), "gates[3].to", "required field is missing", id="missing-gate-to"),
    pytest.param(
        drop("site", "timezone"), "site.timezone", "required field is missing", id="missing-timezone"
    ),
    pytest.param(drop("readers"), "$.readers", "required field is missing", id="missing-readers"),
    # wrong types
    pytest.param(
        put("zones", 0, "capacity", "90000"), "zones[0].capacity", "expected an integer", id="str-capacity"
    ),
    pytest.param(
        put("zones", 0, "capacity", True), "zones[0].capacity", "expected an integer", id="bool-capacity"
    ),
    pytest.param(
        put("gates", 0, "relay_pulse_ms", True),
        "gates[0].relay_pulse_ms",
        "expected an integer",
        id="bool-relay",
    ),
    pytest.param(
        put("gates", 0, "controller", "address", False),
        "gates[0].controller.address",
        "expected an integer",
        id="bool-address",
    ),
    pytest.param(
        put("zones", 0, "capacity", 0), "zones[0].capacity", "out of range 1..10000000", id="zero-capacity"
    ),
    pytest.param(
        put("gates", 0, "controller", "address", 127),
        "gates[0].controller.address",
        "out of range 0..126",
        id="address-range",
    ),
    pytest.param(
        put("gates", 0, "controller", ["stadium-north", 1]),
        "gates[0].controller",
        "expected a mapping",
        id="list-controller",
    ),
    pytest.param(
        put("zones", 0, "threat_levels", ["emergency"]),
        "zones[0].threat_levels",
        "expected a mapping",
        id="list-threat-levels",
    ),
    pytest.param(put("site", ["PAR24"]), "$.site", "expected a mapping", id="list-site"),
    pytest.param(put("zones", {"STADIUM": {}}), "$.zones", "expected a list", id="mapping-zones"),
    pytest.param(put("zones", "STADIUM"), "$.zones", "expected a list", id="string-zones"),
    pytest.param(append("zones", "STADIUM"), "$.zones[10]", "expected a mapping", id="string-zone"),
    pytest.param(
        put("zones", 3, "requires", "field_access_briefing"),
        "zones[3].requires",
        "expected a list",
        id="str-requires",
    ),
    pytest.param(
        put("zones", 3, "threat_levels", "emergency", "closed", "yes"),
        "zones[3].threat_levels.emergency.closed",
        "expected true or false",
        id="str-closed",
    ),
    pytest.param(
        put("zones", 4, "name", ""), "zones[4].name", "expected a non-empty string", id="empty-name"
    ),
    pytest.param(replace(["not", "a", "mapping"]), "$", "expected a mapping", id="list-document"),
    pytest.param(replace(None), "$", "expected a mapping", id="empty-document"),
    # codes and choices
    pytest.param(
        put("readers", 0, "code", "STA G1 IN"),
        "readers[0].code",
        "is not a valid code",
        id="code-with-spaces",
    ),
    pytest.param(
        put("readers", 0, "code", "STA-G1-IN\n"),
        "readers[0].code",
        "is not a valid code",
        id="code-with-newline",
    ),
    pytest.param(
        put("zones", 0, "code", "x" * 49), "zones[0].code", "is not a valid code", id="code-too-long"
    ),
    pytest.param(
        put("gates", 0, "direction", "both"),
        "gates[0].direction",
        "'both' is not one of one_way, two_way",
        id="dir",
    ),
    pytest.param(
        put("zones", 7, "access", "public"), "zones[7].access", "'public' is not one of", id="access"
    ),
    pytest.param(
        put("zones", 0, "anti_passback", "strict"),
        "zones[0].anti_passback",
        "'strict' is not one of",
        id="apb-mode",
    ),
    pytest.param(
        put("gates", 0, "offline_policy", "allow_all"),
        "gates[0].offline_policy",
        "is not one of",
        id="offline",
    ),
    pytest.param(put("readers", 0, "side", "up"), "readers[0].side", "'up' is not one of in, out", id="side"),
    # schedules
    pytest.param(
        put("zones", 1, "schedule", 0, "from", "25:00"),
        "zones[1].schedule[0].from",
        "not a time of day",
        id="hour-25",
    ),
    pytest.param(
        put("zones", 1, "schedule", 0, "from", "10:60"),
        "zones[1].schedule[0].from",
        "not a time of day",
        id="min-60",
    ),
    pytest.param(
        put("zones", 1, "schedule", 0, "from", "1000"),
        "zones[1].schedule[0].from",
        "not a time of day",
        id="no-colon",
    ),
    pytest.param(
        put("zones", 1, "schedule", 0, "from", "6:00"),
        "zones[1].schedule[0].from",
        "not a time of day",
        id="one-digit",
    ),
    pytest.param(
        put("zones", 1, "schedule", 0, "from", "06:00\n"),
        "zones[1].schedule[0].from",
        "not a time of day",
        id="time-with-newline",
    ),
    pytest.param(
        # an unquoted 10:00 is the sexagesimal integer 600 to YAML 1.1
        put("zones", 1, "schedule", 0, "from", 600),
        "zones[1].schedule[0].from",
        "expected a non-empty string, got int 600",
        id="unquoted-time",
    ),
    pytest.param(
        put("zones", 4, "schedule", 0, "to", "10:00"),
        "zones[4].schedule[0].to",
        "must be later than 'from'",
        id="to-equals-from",
    ),
    pytest.param(
        put("zones", 4, "schedule", 0, "to", "02:00"),
        "zones[4].schedule[0].to",
        "must be later than 'from'",
        id="to-before-from",
    ),
    pytest.param(
        put("zones", 4, "schedule", 0, "days", ["fri", "funday"]),
        "zones[4].schedule[0].days[1]",
        "'funday' is not one of mon, tue",
        id="unknown-day",
    ),
    pytest.param(
        put("zones", 4, "schedule", 0, "days", ["Fri"]),
        "zones[4].schedule[0].days[0]",
        "'Fri' is not one of",
        id="capitalised-day",
    ),
    # threat levels, qualifications, roles
    pytest.param(
        put("zones", 3, "threat_levels", "apocalypse", {"closed": True}),
        "zones[3].threat_levels.apocalypse",
        "unknown threat level",
        id="unknown-threat-level",
    ),
    pytest.param(
        put("threat_levels", []), "threat_levels", "at least one level is needed", id="no-threat-levels"
    ),
    pytest.param(
        put("site", "default_threat_level", "calm"),
        "site.default_threat_level",
        "'calm' is not one of threat_levels",
        id="unknown-default-level",
    ),
    pytest.param(
        put("zones", 3, "requires", ["jetpack_licence"]),
        "zones[3].requires[0]",
        "unknown qualification 'jetpack_licence'",
        id="unknown-qualification",
    ),
    pytest.param(
        put("zones", 2, "threat_levels", "heightened", "requires", ["jetpack_licence"]),
        "zones[2].threat_levels.heightened.requires[0]",
        "unknown qualification 'jetpack_licence'",
        id="unknown-qualification-in-rule",
    ),
    pytest.param(
        put("zones", 0, "threat_levels", "emergency", "roles", ["police", "wizard"]),
        "zones[0].threat_levels.emergency.roles[1]",
        "unknown role 'wizard'",
        id="unknown-role",
    ),
    # anti-passback
    pytest.param(
        drop("zones", 2, "anti_passback_minutes"),
        "zones[2].anti_passback_minutes",
        "required when anti_passback is 'timed'",
        id="timed-without-minutes",
    ),
    pytest.param(
        put("zones", 0, "anti_passback_minutes", 5),
        "zones[0].anti_passback_minutes",
        "only meaningful when anti_passback is 'timed'",
        id="minutes-without-timed",
    ),
    pytest.param(
        put("zones", 2, "anti_passback_minutes", 0),
        "zones[2].anti_passback_minutes",
        "out of range 1..1440",
        id="timed-zero-minutes",
    ),
    # outside
    pytest.param(
        append("zones", {"code": OUTSIDE, "name": "The street"}),
        "zones[10].code",
        "'outside' is reserved",
        id="outside-zone",
    ),
    pytest.param(
        put("gates", 1, "to", OUTSIDE), "gates[1].to", "a gate leads into a zone", id="gate-into-outside"
    ),
    pytest.param(
        put("gates", 1, "to", "STADIUM-PERIMETER"),
        "gates[1].to",
        "cannot lead from a zone into itself",
        id="gate-into-itself",
    ),
    pytest.param(
        put("readers", 9, "side", "out"),
        "readers[9].side",
        "gate 'GDN-G1' is one_way",
        id="out-reader-on-one-way",
    ),
    # time zone
    pytest.param(
        put("site", "timezone", "Europe/Atlantis"),
        "site.timezone",
        "unknown time zone 'Europe/Atlantis'",
        id="unknown-timezone",
    ),
    pytest.param(
        put("site", "timezone", "../../etc/passwd"), "site.timezone", "unknown time zone", id="timezone-path"
    ),
]


@pytest.mark.parametrize(("edit", "path", "problem"), REFUSALS)
def test_refused(edit: Edit, path: str, problem: str) -> None:
    edited = edit(sample())
    with pytest.raises(SiteError) as info:
        parse(edited)
    message = str(info.value)
    assert message.startswith(f"zones.yaml: {path}: "), message
    assert problem in message, message


def test_refusal_names_the_source() -> None:
    with pytest.raises(SiteError, match=r"^site-b\.yaml: \$: expected a mapping"):
        parse_site("[]", source="site-b.yaml")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("zones: [unclosed\n", id="unclosed-flow"),
        pytest.param("site:\n\tcode: X\n", id="tab-indent"),
        pytest.param("a: b: c\n", id="nested-colon"),
        pytest.param("site: {code: X\n", id="unclosed-mapping"),
    ],
)
def test_not_yaml_is_refused(text: str) -> None:
    with pytest.raises(SiteError, match=r"^zones\.yaml: not valid YAML"):
        parse_site(text)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-site.yaml"
    with pytest.raises(SiteError, match=re.escape(f"{missing}: cannot read the site file")):
        load_site(missing)


def test_non_utf8_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(SITE_FILE.read_text(encoding="utf-8").replace("Paris", "Sécurité").encode("latin-1"))
    with pytest.raises(SiteError, match=re.escape(f"{path}: not UTF-8 text")):
        load_site(path)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "zones.yaml"
    doc = sample()
    doc["zones"][2]["parent"] = "NOWHERE"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(SiteError, match=re.escape(f"{path}: zones[2].parent: unknown zone 'NOWHERE'")):
        load_site(path)


# --- the documentation's example -----------------------------------------------------------------------


def test_docs_example_is_a_valid_site() -> None:
    example_section = DOC_FILE.read_text(encoding="utf-8").split("\n## Example\n", 1)[-1]
    blocks = re.findall(r"```yaml\n(.*?)```", example_section, flags=re.DOTALL)
    assert blocks, "docs/zones.md has no ```yaml block under '## Example'"
    example = parse_site(blocks[0], source="docs/zones.md")
    assert example.zones and example.gates and example.readers


# --- badge codes -------------------------------------------------------------------------------------------


def test_badge_codes_read_back_as_zones(site: Site) -> None:
    assert site.zone_for_badge_code["P"] == "STADIUM-PERIMETER"
    assert site.zones["AIRPORT-AIRSIDE"].on_badge == "A"
    assert len(site.zone_for_badge_code) == len(site.zones)


def test_a_zone_without_a_badge_code_is_written_in_full() -> None:
    doc = sample()
    del doc["zones"][0]["badge_code"]
    parsed = parse(doc)
    assert parsed.zones["STADIUM-PERIMETER"].on_badge == "STADIUM-PERIMETER"
    assert parsed.zone_for_badge_code["STADIUM-PERIMETER"] == "STADIUM-PERIMETER"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        pytest.param("C", "zones[1].badge_code: 'C' is already the badge code of zone 'STADIUM-PERIMETER'", id="twice"),
        pytest.param("ABCD", "zones[0].badge_code: 'ABCD' is not a badge code (1 to 3 capital letters", id="long"),
        pytest.param("p", "zones[0].badge_code: 'p' is not a badge code", id="lower-case"),
        pytest.param(7, "zones[0].badge_code: expected a non-empty string, got int 7", id="number"),
    ],
)
def test_bad_badge_codes_are_refused(code: Any, message: str) -> None:
    doc = sample()
    doc["zones"][0]["badge_code"] = code
    with pytest.raises(SiteError, match=re.escape(message)):
        parse(doc)


def test_a_badge_code_cannot_be_another_zones_code() -> None:
    doc = sample()
    doc["zones"][0]["code"] = "B2"  # renaming the perimeter (its gates and children follow)
    doc["zones"][1]["parent"] = "B2"
    doc["gates"][0]["to"] = "B2"
    doc["gates"][1]["from"] = "B2"
    doc["zones"][2]["badge_code"] = "B2"
    with pytest.raises(SiteError, match=re.escape("zones[2].badge_code: 'B2' is the code of another zone")):
        parse(doc)

"""The wire contract between gateway, readers and bridges: MQTT topics, message schemas, decision signatures.

Readers and bridges import this module, so it must never import Flask or SQLAlchemy (a test proves it).
Every message is a compact JSON object with a version field `v`; docs/protocol.md documents each field.
Parsing is strict: unknown fields, wrong types and oversized values raise `ContractError`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway import ed25519

VERSION = 1
PREFIX = "acs/v1"
MAX_PAYLOAD_BYTES = 4096
MAX_TOKEN_CHARS = 1024
ANSWER_TTL_MS = 5000  # how long a signed answer may be acted on
# A decision request older than this at the broker is dropped there (MQTT v5 Message Expiry Interval, whole
# seconds): its reader has given up by then (1.5 s), and a gateway that fell behind must not spend its time on it.
REQUEST_EXPIRY_S = 1
_SIGNING_DOMAIN = b"acs-decision-v1\n"  # keeps decision signatures from meaning anything elsewhere
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}\Z")
_NONCE = re.compile(r"^[0-9a-f]{32}\Z")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,47}\Z")
_KID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_SIG = re.compile(r"^[A-Za-z0-9_-]{86}\Z")  # 64 bytes, base64url without padding


class ContractError(ValueError):
    """A message does not follow the wire contract."""


# --- topics ------------------------------------------------------------------------------------------


def request_topic(reader: str) -> str:
    """Where a reader publishes its decision requests."""
    return f"{PREFIX}/readers/{reader}/request"


def answer_topic(reader: str) -> str:
    """Where the gateway publishes the signed answers for one reader (the request's ResponseTopic)."""
    return f"{PREFIX}/readers/{reader}/answer"


def gate_command_topic(gate: str) -> str:
    """Where a reader forwards a signed answer to the bridge that drives its gate's turnstile."""
    return f"{PREFIX}/gates/{gate}/command"


def gate_event_topic(gate: str) -> str:
    """Where a bridge reports what the turnstile controller saw (passage, alarms)."""
    return f"{PREFIX}/gates/{gate}/event"


def gate_ack_topic(gate: str) -> str:
    """Where the gateway confirms to a gate's bridge that an event is in the audit (the bridge may forget it)."""
    return f"{PREFIX}/gates/{gate}/ack"


def _code_in_topic(topic: str, area: str, leaf: str, what: str) -> str:
    """The reader, gate or bridge code in `{PREFIX}/{area}/{code}/{leaf}`; ContractError for any other topic."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{PREFIX}/{area}" or parts[4] != leaf:
        raise ContractError(f"not {'an' if what[0] in 'aeiou' else 'a'} {what} topic: {topic!r}")
    return _code(parts[3], f"topic {area.removesuffix('s')}")


def reader_status_topic(reader: str) -> str:
    """Where a reader keeps its retained status (online with counters; its last will says offline)."""
    return f"{PREFIX}/readers/{reader}/status"


# Every reader's status, for the gateway (not shared: each gateway process may want them all).
READER_STATUS_SUBSCRIPTION = f"{PREFIX}/readers/+/status"


def reader_from_status_topic(topic: str) -> str:
    return _code_in_topic(topic, "readers", "status", "reader status")


# The gateway's workers share the request load through an MQTT v5 shared subscription.
GATEWAY_SHARE_GROUP = "gateway"
REQUEST_SUBSCRIPTION = f"$share/{GATEWAY_SHARE_GROUP}/{PREFIX}/readers/+/request"
EVENT_SUBSCRIPTION = f"$share/{GATEWAY_SHARE_GROUP}/{PREFIX}/gates/+/event"


def gate_from_event_topic(topic: str) -> str:
    return _code_in_topic(topic, "gates", "event", "gate event")


def reader_from_request_topic(topic: str) -> str:
    return _code_in_topic(topic, "readers", "request", "request")


# --- field checks ------------------------------------------------------------------------------------


def _code(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _CODE.match(value):
        raise ContractError(f"{name}: expected a code (letters, digits, '_', '.', '-'), got {value!r:.60}")
    return value


def _int_ms(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ContractError(f"{name}: expected milliseconds since the epoch, got {value!r:.60}")
    return value


def _match(pattern: re.Pattern[str], value: Any, name: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ContractError(f"{name}: expected {what}, got {value!r:.60}")
    return value


def _load(payload: bytes, kind: str, fields: set[str], max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    if len(payload) > max_bytes:
        raise ContractError(f"{kind}: payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ContractError(f"{kind}: not UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ContractError(f"{kind}: expected a JSON object")
    if isinstance(data.get("v"), bool) or data.get("v") != VERSION:  # true == 1 in Python
        raise ContractError(f"{kind}: unsupported version {data.get('v')!r:.20} (expected {VERSION})")
    unknown = set(data) - fields - {"v"}
    if unknown:
        raise ContractError(f"{kind}: unknown field(s) {', '.join(sorted(unknown))[:120]}")
    missing = fields - set(data)
    if missing:
        raise ContractError(f"{kind}: missing field(s) {', '.join(sorted(missing))}")
    return data


def _dump(obj: Mapping[str, Any]) -> bytes:
    return json.dumps({"v": VERSION, **obj}, separators=(",", ":"), ensure_ascii=True).encode()


# --- messages ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRequest:
    """A reader asks: may the holder of this badge pass my gate now?"""

    reader: str
    nonce: str  # 128 random bits, hex; also the MQTT CorrelationData
    token: str  # the badge's QR text
    sent_ms: int  # the reader's clock, for skew detection

    def to_json(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def from_json(cls, payload: bytes) -> DecisionRequest:
        data = _load(payload, "decision request", {"reader", "nonce", "token", "sent_ms"})
        token = data["token"]
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise ContractError(f"token: expected a string of 1..{MAX_TOKEN_CHARS} characters")
        return cls(
            reader=_code(data["reader"], "reader"),
            nonce=_match(_NONCE, data["nonce"], "nonce", "32 lowercase hex digits"),
            token=token,
            sent_ms=_int_ms(data["sent_ms"], "sent_ms"),
        )


_ANSWER_FIELDS = ("reader", "gate", "nonce", "allow", "reason", "badge", "decided_ms", "expires_ms", "kid")


@dataclass(frozen=True)
class DecisionAnswer:
    """The gateway's signed answer to one request. `sig` covers every other field."""

    reader: str
    gate: str  # empty when the reader is unknown to the gateway
    nonce: str
    allow: bool
    reason: str
    badge: str  # the badge id (jti) when the token could be read, else ""
    decided_ms: int
    expires_ms: int
    kid: str  # which decision key signed
    sig: str = ""

    def signing_bytes(self) -> bytes:
        return signing_bytes({k: getattr(self, k) for k in _ANSWER_FIELDS})

    def to_json(self) -> bytes:
        return _dump(vars(self))  # flat fields: no deep copy on the hot path

    @classmethod
    def from_json(cls, payload: bytes) -> DecisionAnswer:
        data = _load(payload, "decision answer", {*_ANSWER_FIELDS, "sig"})
        if not isinstance(data["allow"], bool):
            raise ContractError("allow: expected true or false")
        gate = data["gate"]
        badge = data["badge"]
        if not isinstance(badge, str) or len(badge) > 64:
            raise ContractError("badge: expected a string of at most 64 characters")
        return cls(
            reader=_code(data["reader"], "reader"),
            gate=gate if gate == "" else _code(gate, "gate"),
            nonce=_match(_NONCE, data["nonce"], "nonce", "32 lowercase hex digits"),
            allow=data["allow"],
            reason=_match(_REASON, data["reason"], "reason", "a reason code"),
            badge=badge,
            decided_ms=_int_ms(data["decided_ms"], "decided_ms"),
            expires_ms=_int_ms(data["expires_ms"], "expires_ms"),
            kid=_match(_KID, data["kid"], "kid", "a key id"),
            sig=_match(_SIG, data["sig"], "sig", "an Ed25519 signature in base64url"),
        )


GATE_EVENT_KINDS = (
    "passage",  # the person went through after a grant
    "grant_unused",  # a grant expired without a passage
    "door_forced",
    "door_held_open",
    "tamper",
    "controller_offline",
    "controller_online",
)


@dataclass(frozen=True)
class GateEvent:
    """Something the turnstile controller reported, as the bridge saw it."""

    gate: str
    kind: str
    seq: int  # per-bridge sequence number: the gateway drops repeats
    at_ms: int
    nonce: str = ""  # the decision the event belongs to (passage, grant_unused), else ""

    def to_json(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def from_json(cls, payload: bytes) -> GateEvent:
        data = _load(payload, "gate event", {"gate", "kind", "seq", "at_ms", "nonce"})
        if data["kind"] not in GATE_EVENT_KINDS:
            raise ContractError(f"kind: {data['kind']!r:.40} is not one of {', '.join(GATE_EVENT_KINDS)}")
        nonce = data["nonce"]
        return cls(
            gate=_code(data["gate"], "gate"),
            kind=data["kind"],
            seq=_int_ms(data["seq"], "seq"),
            at_ms=_int_ms(data["at_ms"], "at_ms"),
            nonce=nonce if nonce == "" else _match(_NONCE, nonce, "nonce", "32 lowercase hex digits"),
        )


@dataclass(frozen=True)
class GateEventAck:
    """The gateway has audited the event `seq` of `gate` (or had already): the bridge may drop it."""

    gate: str
    seq: int

    def to_json(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def from_json(cls, payload: bytes) -> GateEventAck:
        data = _load(payload, "gate event ack", {"gate", "seq"})
        return cls(gate=_code(data["gate"], "gate"), seq=_int_ms(data["seq"], "seq"))


READER_STATES = ("online", "offline")
READER_MODES = ("online", "offline")  # deciding with the gateway, or on its own (offline policy)
_STATUS_COUNTERS = ("frames", "decodes", "decisions", "offline_queue")


@dataclass(frozen=True)
class ReaderStatus:
    """A reader's liveness and counters: retained on its status topic, QoS 1. Published when it connects,
    on every heartbeat and when it stops; its last will is the same message with state "offline"."""

    reader: str
    state: str  # "online" or "offline"
    at_ms: int  # the reader's clock when it wrote this (for the will: when it connected)
    frames: int  # camera frames processed since the reader started
    decodes: int  # QR texts read in them (a badge held in view counts once per frame)
    decisions: int  # badge presentations decided (asked of the gateway, or denied when it did not answer)
    offline_queue: int  # decisions taken offline and not yet uploaded
    # "offline" while the reader decides on its own because the gateway does not answer; written only then
    # (added after v1's first release: a status without it means "online").
    mode: str = "online"

    def to_json(self) -> bytes:
        fields = asdict(self)
        if self.mode == "online":
            del fields["mode"]
        return _dump(fields)

    @classmethod
    def from_json(cls, payload: bytes) -> ReaderStatus:
        data = _load_optional(payload, "reader status", {"reader", "state", "at_ms", *_STATUS_COUNTERS}, {"mode"})
        if data["state"] not in READER_STATES:
            raise ContractError(f"state: {data['state']!r:.40} is not one of {', '.join(READER_STATES)}")
        mode = data.get("mode", "online")
        if mode not in READER_MODES:
            raise ContractError(f"mode: {mode!r:.40} is not one of {', '.join(READER_MODES)}")
        return cls(
            reader=_code(data["reader"], "reader"),
            state=data["state"],
            at_ms=_int_ms(data["at_ms"], "at_ms"),
            **{name: _count(data[name], name) for name in _STATUS_COUNTERS},
            mode=mode,
        )


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ContractError(f"{name}: expected a count (a non-negative integer), got {value!r:.60}")
    return value


# --- bridge status -----------------------------------------------------------------------------------


def bridge_status_topic(bridge: str) -> str:
    """Where a bridge (named by its broker account) keeps its retained status; its last will says offline."""
    return f"{PREFIX}/bridges/{bridge}/status"


BRIDGE_STATUS_SUBSCRIPTION = f"{PREFIX}/bridges/+/status"


def bridge_from_status_topic(topic: str) -> str:
    return _code_in_topic(topic, "bridges", "status", "bridge status")


BRIDGE_STATES = ("online", "offline")
CONTROLLER_LINK_STATES = ("up", "down")
MAX_BRIDGE_GATES = 32  # an RS-485 bus carries a handful of controllers; this bounds the message
_BRIDGE_COUNTERS = ("outbox", "events", "commands")


@dataclass(frozen=True)
class BridgeStatus:
    """A bridge's liveness: retained on its status topic, QoS 1. Published when it connects, every heartbeat
    and when it stops; its last will is the same message with state "offline" (sent_ms: when it connected)."""

    bridge: str  # the bridge's broker account: bridge.<GATE> or bridge-bus.<BUS>
    state: str  # "online" or "offline"
    sent_ms: int  # the bridge's clock when it wrote this
    controllers: Mapping[str, str]  # gate code -> "up" (OSDP secure channel established) or "down"
    outbox: int  # gate events kept on disk, not yet acknowledged by the gateway
    events: int  # gate events recorded since the bridge started
    commands: int  # signed answers handled since the bridge started (grant, deny or ignored)

    def to_json(self) -> bytes:
        return _dump({**asdict(self), "controllers": dict(self.controllers)})

    @classmethod
    def from_json(cls, payload: bytes) -> BridgeStatus:
        data = _load(payload, "bridge status", {"bridge", "state", "sent_ms", "controllers", *_BRIDGE_COUNTERS})
        if data["state"] not in BRIDGE_STATES:
            raise ContractError(f"state: {data['state']!r:.40} is not one of {', '.join(BRIDGE_STATES)}")
        controllers = data["controllers"]
        if not isinstance(controllers, dict) or not 0 < len(controllers) <= MAX_BRIDGE_GATES:
            raise ContractError(f"controllers: expected an object of 1..{MAX_BRIDGE_GATES} gates")
        for gate, link in controllers.items():
            _code(gate, "controllers gate")
            if link not in CONTROLLER_LINK_STATES:
                raise ContractError(f"controllers: {link!r:.20} is not one of {', '.join(CONTROLLER_LINK_STATES)}")
        return cls(
            bridge=_code(data["bridge"], "bridge"),
            state=data["state"],
            sent_ms=_int_ms(data["sent_ms"], "sent_ms"),
            controllers=dict(controllers),
            **{name: _count(data[name], name) for name in _BRIDGE_COUNTERS},
        )


# --- signatures --------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_bytes(fields: Mapping[str, Any]) -> bytes:
    """Domain tag + canonical JSON (sorted keys, no spaces, ASCII) of the signed fields."""
    return _SIGNING_DOMAIN + json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint of an Ed25519 key, truncated: stable, derived, never chosen by hand."""
    return _thumbprint(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def signing_key_id(private_key: Ed25519PrivateKey) -> str:
    """`key_id` of a private key's public half (without deriving that half again at every call)."""
    return _thumbprint(ed25519.public_raw(private_key))


@functools.lru_cache(maxsize=64)  # every answer names its key: hash each key once, not per answer
def _thumbprint(raw: bytes) -> str:
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())[:16]


def sign_answer(answer: DecisionAnswer, private_key: Ed25519PrivateKey) -> DecisionAnswer:
    return _signed(answer, private_key)


def public_key_from_pem(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ContractError("the decision key must be an Ed25519 public key")
    return key


DecisionKeys = Mapping[str, Ed25519PublicKey]  # kid -> public key


def answer_problem(
    answer: DecisionAnswer,
    keys: DecisionKeys,
    *,
    reader: str | None,
    nonce: str | None,
    now_ms: int,
    gate: str | None = None,
) -> str | None:
    """Why an answer must not be acted on, or None when it is genuine, ours, pending and fresh.

    `reader` and `nonce` name the request the caller is waiting for; None skips that check for a caller that
    checks it itself (the bridge accepts either reader of its gate and keeps its own record of used nonces).
    """
    key = keys.get(answer.kid)
    if key is None:
        return f"unknown decision key {answer.kid!r}"
    if not _signature_holds(answer, key):
        return "bad signature"
    if reader is not None and answer.reader != reader:
        return f"answer is for reader {answer.reader!r}, not {reader!r}"
    if gate is not None and answer.gate != gate:
        return f"answer is for gate {answer.gate!r}, not {gate!r}"
    if nonce is not None and answer.nonce != nonce:
        return "answer is not for the pending request"
    if now_ms >= answer.expires_ms:
        return f"answer expired {now_ms - answer.expires_ms} ms ago"
    return None


# --- retained site messages (gateway to readers and bridges) -------------------------------------------

SITE_TOPICS = {
    "keys": f"{PREFIX}/site/keys",  # badge keys still accepted, and the issuer
    "revocations": f"{PREFIX}/site/revocations",  # every revoked badge id (full list, versioned)
    "threat_level": f"{PREFIX}/site/threat-level",
    "config": f"{PREFIX}/site/config",  # the site file readers need to decide offline
}
MAX_SITE_MESSAGE_BYTES = 4 * 1024 * 1024
_SITE_DOMAIN = b"acs-site-v1\n"
_SITE_FIELDS = ("kind", "version", "issued_ms", "body", "kid")


@dataclass(frozen=True)
class SiteMessage:
    """A retained, signed statement by the gateway. Readers keep the highest `version` of each kind."""

    kind: str
    version: int
    issued_ms: int
    body: Mapping[str, Any]
    kid: str
    sig: str = ""

    def signing_bytes(self) -> bytes:
        fields = {k: getattr(self, k) for k in _SITE_FIELDS}
        return _SITE_DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def to_json(self) -> bytes:
        return _dump({**{k: getattr(self, k) for k in _SITE_FIELDS}, "body": dict(self.body), "sig": self.sig})

    @classmethod
    def from_json(cls, payload: bytes) -> SiteMessage:
        if len(payload) > MAX_SITE_MESSAGE_BYTES:
            raise ContractError(f"site message: {len(payload)} bytes exceeds {MAX_SITE_MESSAGE_BYTES}")
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ContractError(f"site message: not UTF-8 JSON ({exc})") from None
        if not isinstance(data, dict) or isinstance(data.get("v"), bool) or data.get("v") != VERSION:
            raise ContractError("site message: expected a JSON object of version 1")
        if set(data) != {"v", *_SITE_FIELDS, "sig"}:
            raise ContractError("site message: wrong set of fields")
        if not isinstance(data["kind"], str) or data["kind"] not in SITE_TOPICS:  # a list would not hash
            raise ContractError(f"site message: unknown kind {str(data['kind'])[:40]!r}")
        if not isinstance(data["body"], dict):
            raise ContractError("site message: body must be an object")
        return cls(
            kind=data["kind"],
            version=_int_ms(data["version"], "version"),
            issued_ms=_int_ms(data["issued_ms"], "issued_ms"),
            body=data["body"],
            kid=_match(_KID, data["kid"], "kid", "a key id"),
            sig=_match(_SIG, data["sig"], "sig", "an Ed25519 signature in base64url"),
        )


def sign_site_message(message: SiteMessage, private_key: Ed25519PrivateKey) -> SiteMessage:
    return _signed(message, private_key)


def site_message_problem(message: SiteMessage, keys: DecisionKeys) -> str | None:
    """Why a site message must not be believed, or None when the gateway's decision key signed it."""
    key = keys.get(message.kid)
    if key is None:
        return f"unknown decision key {message.kid!r}"
    if not _signature_holds(message, key):
        return "bad signature"
    return None


def badge_keys_from(message: SiteMessage) -> dict[str, Ed25519PublicKey]:
    """The accepted badge public keys of a verified `keys` message, by kid."""
    out: dict[str, Ed25519PublicKey] = {}
    for entry in message.body.get("badge_keys", []):
        out[str(entry["kid"])] = Ed25519PublicKey.from_public_bytes(b64url_decode(str(entry["x"])))
    return out


# --- offline operation: a reader's own decisions while the gateway is away ----------------------------
# A reader that gets no genuine answer in time decides by its gate's offline policy. With `verify_locally`
# it signs its answer with its own Ed25519 offline key (never the gateway's) under its own domain tag, so an
# offline answer can never pass for a gateway answer; bridges accept one only from a reader of their gate
# whose public key they were given, and only when the gate's policy is `verify_locally`. Every offline
# decision is uploaded later on the reader's upload topic; the gateway audits it (mode "offline") and
# acknowledges it, and only then does the reader forget it.

_OFFLINE_DOMAIN = b"acs-offline-decision-v1\n"
OFFLINE_MODE = "offline"
MAX_OFFLINE_DETAIL_CHARS = 1000


def offline_upload_topic(reader: str) -> str:
    """Where a reader uploads the decisions it took offline (the ACL: only that reader may write it)."""
    return f"{PREFIX}/readers/{reader}/offline"


def offline_ack_topic(reader: str) -> str:
    """Where the gateway confirms to a reader that an uploaded offline decision is in the audit."""
    return f"{PREFIX}/readers/{reader}/offline-ack"


OFFLINE_UPLOAD_SUBSCRIPTION = f"$share/{GATEWAY_SHARE_GROUP}/{PREFIX}/readers/+/offline"


def reader_from_offline_topic(topic: str) -> str:
    return _code_in_topic(topic, "readers", "offline", "offline upload")


@dataclass(frozen=True)
class OfflineAnswer:
    """A reader's own signed answer, taken offline: the fields of a DecisionAnswer plus `mode: "offline"`.

    `kid` is the id (contract.key_id) of the reader's offline key; `sig` covers every other field."""

    reader: str
    gate: str
    nonce: str
    allow: bool
    reason: str
    badge: str
    decided_ms: int
    expires_ms: int
    kid: str
    sig: str = ""
    mode: str = OFFLINE_MODE

    def signing_bytes(self) -> bytes:
        fields = {k: getattr(self, k) for k in (*_ANSWER_FIELDS, "mode")}
        return _OFFLINE_DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def to_json(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def from_json(cls, payload: bytes) -> OfflineAnswer:
        data = _load(payload, "offline answer", {*_ANSWER_FIELDS, "sig", "mode"})
        if data["mode"] != OFFLINE_MODE:
            raise ContractError(f"mode: expected {OFFLINE_MODE!r}")
        online = {k: v for k, v in data.items() if k != "mode"}
        answer = DecisionAnswer.from_json(_dump({k: v for k, v in online.items() if k != "v"}))
        if answer.gate == "":
            raise ContractError("gate: an offline answer names its gate")
        return cls(**{k: getattr(answer, k) for k in (*_ANSWER_FIELDS, "sig")})


def sign_offline_answer(answer: OfflineAnswer, private_key: Ed25519PrivateKey) -> OfflineAnswer:
    return _signed(answer, private_key)


ReaderKeys = Mapping[str, Ed25519PublicKey]  # reader code -> that reader's offline public key


def offline_answer_problem(answer: OfflineAnswer, reader_keys: ReaderKeys, *, gate: str, now_ms: int) -> str | None:
    """Why an offline answer must not be acted on, or None when the named reader's offline key signed it for
    `gate` and it is fresh. The caller checks that the reader is at its gate and that the policy allows it."""
    key = reader_keys.get(answer.reader)
    if key is None:
        return f"no offline key registered for reader {answer.reader!r}"
    if answer.kid != key_id(key):
        return f"offline key {answer.kid!r} is not reader {answer.reader}'s"
    if not _signature_holds(answer, key):
        return "bad signature"
    if answer.gate != gate:
        return f"answer is for gate {answer.gate!r}, not {gate!r}"
    if now_ms >= answer.expires_ms:
        return f"answer expired {now_ms - answer.expires_ms} ms ago"
    if answer.expires_ms - answer.decided_ms > ANSWER_TTL_MS:
        return "answer lives longer than the contract allows"
    return None


_OFFLINE_DECISION_FIELDS = ("reader", "gate", "nonce", "allow", "reason", "badge", "holder", "decided_ms", "detail")
_ID_OR_EMPTY = re.compile(r"^([A-Za-z0-9_-]{4,40})?\Z")


@dataclass(frozen=True)
class OfflineDecision:
    """A decision a reader took offline, uploaded when the gateway is back (repeated until acknowledged)."""

    reader: str
    gate: str
    nonce: str  # the decision's own nonce: the gateway records each once (audit ref)
    allow: bool
    reason: str
    badge: str  # badge id, "" when the token could not be read
    holder: str  # holder id from the verified badge, else ""
    decided_ms: int  # the reader's clock when it decided
    detail: str  # policy, threat level and the core's detail, at most MAX_OFFLINE_DETAIL_CHARS

    def to_json(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def from_json(cls, payload: bytes) -> OfflineDecision:
        data = _load(payload, "offline decision", set(_OFFLINE_DECISION_FIELDS))
        if not isinstance(data["allow"], bool):
            raise ContractError("allow: expected true or false")
        detail = data["detail"]
        if not isinstance(detail, str) or len(detail) > MAX_OFFLINE_DETAIL_CHARS:
            raise ContractError(f"detail: expected a string of at most {MAX_OFFLINE_DETAIL_CHARS} characters")
        return cls(
            reader=_code(data["reader"], "reader"),
            gate=_code(data["gate"], "gate"),
            nonce=_match(_NONCE, data["nonce"], "nonce", "32 lowercase hex digits"),
            allow=data["allow"],
            reason=_match(_REASON, data["reason"], "reason", "a reason code"),
            badge=_match(_ID_OR_EMPTY, data["badge"], "badge", 'a badge id or ""'),
            holder=_match(_ID_OR_EMPTY, data["holder"], "holder", 'a holder id or ""'),
            decided_ms=_int_ms(data["decided_ms"], "decided_ms"),
            detail=detail,
        )


@dataclass(frozen=True)
class OfflineDecisionAck:
    """The gateway has audited the offline decision `nonce` of `reader` (or had already): the reader may drop it."""

    reader: str
    nonce: str

    def to_json(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def from_json(cls, payload: bytes) -> OfflineDecisionAck:
        data = _load(payload, "offline decision ack", {"reader", "nonce"})
        return cls(
            reader=_code(data["reader"], "reader"),
            nonce=_match(_NONCE, data["nonce"], "nonce", "32 lowercase hex digits"),
        )


def _load_optional(payload: bytes, kind: str, fields: set[str], optional: set[str]) -> dict[str, Any]:
    """_load for a message with fields added after its first release: each may be absent."""
    try:
        present = json.loads(payload.decode("utf-8")) if len(payload) <= MAX_PAYLOAD_BYTES else {}
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        present = {}  # _load says why
    extra = optional & set(present) if isinstance(present, dict) else set()
    return _load(payload, kind, fields | extra)


# --- the guard's gate page: guard login, holder look-up, manual and forced decisions --------------------
# A reader's gate page asks on its own guard topics; the gateway answers there, signed with the decision key
# under its own domain tag (a guard answer can never pass for a decision answer, nor the other way round).


def guard_request_topic(reader: str) -> str:
    """Where a reader's gate page publishes its guard requests."""
    return f"{PREFIX}/readers/{reader}/guard/request"


def guard_answer_topic(reader: str) -> str:
    """Where the gateway publishes its signed answers to one reader's gate page."""
    return f"{PREFIX}/readers/{reader}/guard/answer"


GUARD_REQUEST_SUBSCRIPTION = f"$share/{GATEWAY_SHARE_GROUP}/{PREFIX}/readers/+/guard/request"


def reader_from_guard_request_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:3]) != f"{PREFIX}/readers" or parts[4:] != ["guard", "request"]:
        raise ContractError(f"not a guard request topic: {topic!r}")
    return _code(parts[3], "topic reader")


GUARD_OPS = (
    "login",  # badge (id or QR text) + pin -> a guard session
    "logout",  # the guard leaves the post (or the page's idle timeout ended the session)
    "lookup",  # query -> holders matching a name, badge number or organisation
    "card",  # holder, or ref (a decision nonce of this reader) -> name, role, organisation, photo
    "decide",  # holder -> a manual decision under the same rules as a scan
    "force",  # holder + why + note -> a forced grant (guards with the override right only)
)
# Why a guard forces a grant; "other" needs a note.
FORCE_REASONS = ("medical_emergency", "evacuation", "lead_instruction", "system_fault", "other")
FORCED_GRANT = "forced_grant"  # the reason of a forced grant's answer, and of the leads' alarm it raises
MAX_GUARD_ANSWER_BYTES = 32 * 1024  # a card carries a small JPEG
_GUARD_DOMAIN = b"acs-guard-v1\n"
_PIN = re.compile(r"^[0-9]{4,12}\Z")
_RECORD_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}\Z")  # holder ids and nonces as the gateway stores them
_GUARD_TEXT = {"session": 64, "badge": MAX_TOKEN_CHARS, "pin": 12, "query": 80, "note": 300}


@dataclass(frozen=True)
class GuardRequest:
    """A gate page asks the gateway something for the guard at its post. Unused fields are ""."""

    reader: str
    nonce: str  # 128 random bits, hex; also the MQTT CorrelationData
    op: str  # one of GUARD_OPS
    sent_ms: int
    session: str = ""  # the guard session from "login" (every other op needs it)
    badge: str = ""  # login: the guard's badge id, or the QR text of their badge
    pin: str = ""  # login: 4 to 12 digits
    query: str = ""  # lookup
    holder: str = ""  # card, decide, force: a holder id
    ref: str = ""  # card: the nonce of a decision taken at this reader
    why: str = ""  # force: one of FORCE_REASONS
    note: str = ""  # force: free text

    def to_json(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def from_json(cls, payload: bytes) -> GuardRequest:
        data = _load(payload, "guard request", set(cls.__dataclass_fields__))
        if data["op"] not in GUARD_OPS:
            raise ContractError(f"op: {data['op']!r:.40} is not one of {', '.join(GUARD_OPS)}")
        for name, limit in _GUARD_TEXT.items():
            if not isinstance(data[name], str) or len(data[name]) > limit:
                raise ContractError(f"{name}: expected a string of at most {limit} characters")
        if data["pin"]:
            _match(_PIN, data["pin"], "pin", "4 to 12 digits")
        for name in ("holder", "ref"):
            if data[name] != "":
                _match(_RECORD_ID, data[name], name, "a record id")
        if data["why"] != "" and data["why"] not in FORCE_REASONS:
            raise ContractError(f"why: expected one of {', '.join(FORCE_REASONS)}")
        data.pop("v")
        return cls(
            **{
                **data,
                "reader": _code(data["reader"], "reader"),
                "nonce": _match(_NONCE, data["nonce"], "nonce", "32 lowercase hex digits"),
                "sent_ms": _int_ms(data["sent_ms"], "sent_ms"),
            }
        )


_GUARD_ANSWER_FIELDS = ("reader", "nonce", "op", "ok", "error", "body", "issued_ms", "kid")


@dataclass(frozen=True)
class GuardAnswer:
    """The gateway's signed answer to one guard request: `error` is a reason code when `ok` is false, else "";
    `body` depends on `op` (docs/protocol.md). `sig` covers every other field."""

    reader: str
    nonce: str
    op: str
    ok: bool
    error: str
    body: Mapping[str, Any]
    issued_ms: int
    kid: str
    sig: str = ""

    def signing_bytes(self) -> bytes:
        fields = {k: getattr(self, k) for k in _GUARD_ANSWER_FIELDS}
        fields["body"] = dict(self.body)
        return _GUARD_DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def to_json(self) -> bytes:
        return _dump({**{k: getattr(self, k) for k in _GUARD_ANSWER_FIELDS}, "body": dict(self.body), "sig": self.sig})

    @classmethod
    def from_json(cls, payload: bytes) -> GuardAnswer:
        data = _load(payload, "guard answer", {*_GUARD_ANSWER_FIELDS, "sig"}, MAX_GUARD_ANSWER_BYTES)
        if data["op"] not in GUARD_OPS:
            raise ContractError(f"op: {data['op']!r:.40} is not one of {', '.join(GUARD_OPS)}")
        if not isinstance(data["ok"], bool):
            raise ContractError("ok: expected true or false")
        if not isinstance(data["body"], dict):
            raise ContractError("body: expected an object")
        return cls(
            reader=_code(data["reader"], "reader"),
            nonce=_match(_NONCE, data["nonce"], "nonce", "32 lowercase hex digits"),
            op=data["op"],
            ok=data["ok"],
            error="" if data["error"] == "" else _match(_REASON, data["error"], "error", "a reason code"),
            body=data["body"],
            issued_ms=_int_ms(data["issued_ms"], "issued_ms"),
            kid=_match(_KID, data["kid"], "kid", "a key id"),
            sig=_match(_SIG, data["sig"], "sig", "an Ed25519 signature in base64url"),
        )


def sign_guard_answer(answer: GuardAnswer, private_key: Ed25519PrivateKey) -> GuardAnswer:
    return _signed(answer, private_key)


def guard_answer_problem(answer: GuardAnswer, keys: DecisionKeys, *, reader: str, nonce: str) -> str | None:
    """Why a guard answer must not be believed, or None when the gateway signed it for this pending request."""
    key = keys.get(answer.kid)
    if key is None:
        return f"unknown decision key {answer.kid!r}"
    if not _signature_holds(answer, key):
        return "bad signature"
    if answer.reader != reader:
        return f"answer is for reader {answer.reader!r}, not {reader!r}"
    if answer.nonce != nonce:
        return "answer is not for the pending request"
    return None


def decision_in(body: Mapping[str, Any]) -> DecisionAnswer | None:
    """The signed decision answer a "decide" or "force" guard answer carries (check it with answer_problem)."""
    raw = body.get("decision")
    if not isinstance(raw, dict):
        return None
    return DecisionAnswer.from_json(_dump(raw))


_Signed = TypeVar("_Signed", DecisionAnswer, SiteMessage, OfflineAnswer, GuardAnswer)


def _signed(message: _Signed, private_key: Ed25519PrivateKey) -> _Signed:
    """The message with `kid` naming the key and `sig` over every other field (its signing_bytes)."""
    kid = signing_key_id(private_key)
    # A message built with its kid and no sig (the decision service's answers) is signed as it is: one copy fewer.
    unsigned = message if message.kid == kid and not message.sig else replace(message, kid=kid, sig="")
    return replace(unsigned, sig=b64url(ed25519.sign(private_key, unsigned.signing_bytes())))


def _signature_holds(message: _Signed, key: Ed25519PublicKey) -> bool:
    """`sig` is `key`'s signature over the message's signing_bytes (False for undecodable base64 too)."""
    try:
        signature = b64url_decode(message.sig)
    except (binascii.Error, ValueError):
        return False
    return ed25519.verify(key, signature, message.signing_bytes())


def reader_status_on(topic: str, payload: bytes) -> ReaderStatus:
    """A reader status as received: well formed, and naming the reader whose topic it came on (the ACL lets a
    reader write only its own), else ContractError."""
    reader = reader_from_status_topic(topic)
    status = ReaderStatus.from_json(payload)
    if status.reader != reader:
        raise ContractError(f"status on {topic} names reader {status.reader}")
    return status


def bridge_status_on(topic: str, payload: bytes) -> BridgeStatus:
    """A bridge status as received: well formed, and naming the bridge whose topic it came on, else ContractError."""
    bridge = bridge_from_status_topic(topic)
    status = BridgeStatus.from_json(payload)
    if status.bridge != bridge:
        raise ContractError(f"status on {topic} names bridge {status.bridge}")
    return status

"""The wire contract between gateway, readers and bridges: MQTT topics, message schemas, decision signatures.

Readers and bridges import this module, so it must never import Flask or SQLAlchemy (a test proves it).
Every message is a compact JSON object with a version field `v`; docs/protocol.md documents each field.
Parsing is strict: unknown fields, wrong types and oversized values raise `ContractError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VERSION = 1
PREFIX = "acs/v1"
MAX_PAYLOAD_BYTES = 4096
MAX_TOKEN_CHARS = 1024
ANSWER_TTL_MS = 5000  # how long a signed answer may be acted on
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


def reader_status_topic(reader: str) -> str:
    """Where a reader keeps its retained status (online with counters; its last will says offline)."""
    return f"{PREFIX}/readers/{reader}/status"


# Every reader's status, for the gateway (not shared: each gateway process may want them all).
READER_STATUS_SUBSCRIPTION = f"{PREFIX}/readers/+/status"


def reader_from_status_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{PREFIX}/readers" or parts[4] != "status":
        raise ContractError(f"not a reader status topic: {topic!r}")
    return _code(parts[3], "topic reader")


# The gateway's workers share the request load through an MQTT v5 shared subscription.
GATEWAY_SHARE_GROUP = "gateway"
REQUEST_SUBSCRIPTION = f"$share/{GATEWAY_SHARE_GROUP}/{PREFIX}/readers/+/request"
EVENT_SUBSCRIPTION = f"$share/{GATEWAY_SHARE_GROUP}/{PREFIX}/gates/+/event"


def gate_from_event_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{PREFIX}/gates" or parts[4] != "event":
        raise ContractError(f"not a gate event topic: {topic!r}")
    return _code(parts[3], "topic gate")


def reader_from_request_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{PREFIX}/readers" or parts[4] != "request":
        raise ContractError(f"not a request topic: {topic!r}")
    return _code(parts[3], "topic reader")


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


def _load(payload: bytes, kind: str, fields: set[str]) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"{kind}: payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
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
        return _dump(asdict(self))

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

    def to_json(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def from_json(cls, payload: bytes) -> ReaderStatus:
        data = _load(payload, "reader status", {"reader", "state", "at_ms", *_STATUS_COUNTERS})
        if data["state"] not in READER_STATES:
            raise ContractError(f"state: {data['state']!r:.40} is not one of {', '.join(READER_STATES)}")
        return cls(
            reader=_code(data["reader"], "reader"),
            state=data["state"],
            at_ms=_int_ms(data["at_ms"], "at_ms"),
            **{name: _count(data[name], name) for name in _STATUS_COUNTERS},
        )


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ContractError(f"{name}: expected a count (a non-negative integer), got {value!r:.60}")
    return value


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
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())[:16]


def sign_answer(answer: DecisionAnswer, private_key: Ed25519PrivateKey) -> DecisionAnswer:
    kid = key_id(private_key.public_key())
    unsigned = DecisionAnswer(**{**asdict(answer), "kid": kid, "sig": ""})
    return DecisionAnswer(**{**asdict(unsigned), "sig": b64url(private_key.sign(unsigned.signing_bytes()))})


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
    try:
        key.verify(b64url_decode(answer.sig), answer.signing_bytes())
    except (InvalidSignature, binascii.Error, ValueError):
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
        if data["kind"] not in SITE_TOPICS:
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
    unsigned = SiteMessage(
        message.kind, message.version, message.issued_ms, message.body, key_id(private_key.public_key())
    )
    return SiteMessage(**{**unsigned.__dict__, "sig": b64url(private_key.sign(unsigned.signing_bytes()))})


def site_message_problem(message: SiteMessage, keys: DecisionKeys) -> str | None:
    """Why a site message must not be believed, or None when the gateway's decision key signed it."""
    key = keys.get(message.kid)
    if key is None:
        return f"unknown decision key {message.kid!r}"
    try:
        key.verify(b64url_decode(message.sig), message.signing_bytes())
    except (InvalidSignature, binascii.Error, ValueError):
        return "bad signature"
    return None


def badge_keys_from(message: SiteMessage) -> dict[str, Ed25519PublicKey]:
    """The accepted badge public keys of a verified `keys` message, by kid."""
    out: dict[str, Ed25519PublicKey] = {}
    for entry in message.body.get("badge_keys", []):
        out[str(entry["kid"])] = Ed25519PublicKey.from_public_bytes(b64url_decode(str(entry["x"])))
    return out

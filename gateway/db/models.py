"""SQLAlchemy 2 models. Every schema change goes through an Alembic migration in gateway/migrations."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime, TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone, and a naive time is a bug waiting."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class Organisation(Base):
    """A national contingent, police or gendarmerie unit, army unit or private security company."""

    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(48), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))  # police, gendarmerie, military, private_security, ...
    country: Mapped[str] = mapped_column(String(2))  # ISO 3166-1 alpha-2
    holders: Mapped[list[Holder]] = relationship(back_populates="organisation")


class Holder(Base):
    """A person who guards the event and holds a badge."""

    __tablename__ = "holders"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # opaque, random: it is in the QR code
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    family_name: Mapped[str] = mapped_column(String(120))
    given_name: Mapped[str] = mapped_column(String(120))
    country: Mapped[str] = mapped_column(String(2))
    role: Mapped[str] = mapped_column(String(48))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active, suspended
    photo: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    photo_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    reference: Mapped[str] = mapped_column(String(64), default="", server_default="")  # contingent's own number
    # After retention removed the personal data: when, and a keyed hash of the name (gateway/retention.py).
    personal_data_removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    identity_hmac: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    organisation: Mapped[Organisation] = relationship(back_populates="holders")
    qualifications: Mapped[list[Qualification]] = relationship(back_populates="holder")
    badges: Mapped[list[Badge]] = relationship(back_populates="holder")


class Qualification(Base):
    __tablename__ = "qualifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder_id: Mapped[str] = mapped_column(ForeignKey("holders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(48))  # a code from zones.yaml's qualifications
    reference: Mapped[str] = mapped_column(String(120), default="")  # e.g. a licence number
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    holder: Mapped[Holder] = relationship(back_populates="qualifications")


class Badge(Base):
    """One issued credential; its id is the token's `jti`."""

    __tablename__ = "badges"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder_id: Mapped[str] = mapped_column(ForeignKey("holders.id"), index=True)
    kid: Mapped[str] = mapped_column(String(64))
    zones: Mapped[str] = mapped_column(Text)  # space-separated zone codes, as signed
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    issued_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id"), nullable=True)
    token: Mapped[str] = mapped_column(Text)  # kept to reprint the same QR
    holder: Mapped[Holder] = relationship(back_populates="badges")
    revocation: Mapped[Revocation | None] = relationship(back_populates="badge")

    @property
    def zone_codes(self) -> list[str]:
        return self.zones.split()


class Revocation(Base):
    """A badge that must no longer open anything. `id` orders revocations: it is the list's version."""

    __tablename__ = "revocations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    badge_id: Mapped[str] = mapped_column(ForeignKey("badges.id"), unique=True)
    reason: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id"), nullable=True)
    badge: Mapped[Badge] = relationship(back_populates="revocation")


class GateRecord(Base):
    """A gate of zones.yaml, mirrored so that audit rows can refer to it and leads can list gates."""

    __tablename__ = "gates"
    code: Mapped[str] = mapped_column(String(48), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    from_zone: Mapped[str] = mapped_column(String(48))
    to_zone: Mapped[str] = mapped_column(String(48))


class ReaderRecord(Base):
    __tablename__ = "readers"
    code: Mapped[str] = mapped_column(String(48), primary_key=True)
    gate_code: Mapped[str] = mapped_column(ForeignKey("gates.code"))
    side: Mapped[str] = mapped_column(String(8))


class AuditEntry(Base):
    """One entry of the audit: decisions, gate events, desk and lead actions, in one append-only sequence.

    `seq` is assigned by the writer (head + 1) so that the hash chain covers it; each row hashes its predecessor.
    Common columns are typed and indexed for the leads' searches; the rest of an entry lives in `detail`.
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        UniqueConstraint("ref", name="uq_audit_ref"),
        Index("ix_audit_at", "at"),
        Index("ix_audit_kind_at", "kind", "at"),
        Index("ix_audit_gate_at", "gate", "at"),
        # (column, seq): the leads' keyset pages, newest first, without a sort (migration 0006)
        Index("ix_audit_gate_seq", "gate", "seq"),
        Index("ix_audit_holder_seq", "holder_id", "seq"),
        Index("ix_audit_badge_seq", "badge_id", "seq"),
        Index("ix_audit_kind_seq", "kind", "seq"),
        Index("ix_audit_reason_seq", "reason", "seq"),
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(24))  # decision, gate_event, badge_issued, badge_revoked, ...
    ref: Mapped[str | None] = mapped_column(String(80), nullable=True)  # idempotency key: nonce, gate:seq
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # when it happened (decided, passed, revoked)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # when the gateway wrote it
    reader: Mapped[str] = mapped_column(String(48), default="")
    gate: Mapped[str] = mapped_column(String(48), default="")  # no foreign keys: unknown places are audited too
    badge_id: Mapped[str] = mapped_column(String(40), default="")
    holder_id: Mapped[str] = mapped_column(String(40), default="")
    operator: Mapped[str] = mapped_column(String(64), default="")
    allow: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    reason: Mapped[str] = mapped_column(String(48), default="")
    mode: Mapped[str] = mapped_column(String(8), default="")  # online, offline, manual, forced
    detail: Mapped[str] = mapped_column(Text, default="")
    expires_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # a decision answer's expiry
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class Operator(Base):
    """A person who logs in to the web side: badge desk staff, security leads, administrators."""

    __tablename__ = "operators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # desk, lead, admin
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class SiteState(Base):
    """Site-wide settings that leads switch at run time (the threat level); every change is also audited."""

    __tablename__ = "site_state"
    key: Mapped[str] = mapped_column(String(48), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    changed_by: Mapped[str] = mapped_column(String(64), default="")


class Position(Base):
    """Where a holder is now, from confirmed passages (never from grants alone): anti-passback and muster."""

    __tablename__ = "positions"
    holder_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    zone: Mapped[str] = mapped_column(String(48), index=True)  # "outside" once they have left the site
    gate: Mapped[str] = mapped_column(String(48))
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Occupancy(Base):
    """How many holders are in a zone, kept with positions in the same transaction so that reading it is O(1)."""

    __tablename__ = "occupancy"
    zone: Mapped[str] = mapped_column(String(48), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class Assignment(Base):
    """Where and when a holder may go: zones, a validity window and optional shifts. Badges are issued from it."""

    __tablename__ = "assignments"
    holder_id: Mapped[str] = mapped_column(ForeignKey("holders.id"), primary_key=True)
    zones: Mapped[str] = mapped_column(Text)  # space-separated zone codes
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    shifts: Mapped[list[Shift]] = relationship(cascade="all, delete-orphan", order_by="Shift.id")
    holder: Mapped[Holder] = relationship()

    @property
    def zone_codes(self) -> list[str]:
        return self.zones.split()


class Shift(Base):
    """A weekly working window of an assignment, in the site's local time (like a zone's schedule window)."""

    __tablename__ = "shifts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder_id: Mapped[str] = mapped_column(ForeignKey("assignments.holder_id"), index=True)
    days: Mapped[str] = mapped_column(String(32))  # space-separated: mon tue wed thu fri sat sun
    starts: Mapped[str] = mapped_column(String(5))  # HH:MM
    ends: Mapped[str] = mapped_column(String(5))  # HH:MM or 24:00, later than starts


class ApiToken(Base):
    """A secret that lets a script act as one operator on the JSON API; only its SHA-256 is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Guard(Base):
    """A holder who may log in to a reader's gate page with their badge and a PIN (managed by desk/admin)."""

    __tablename__ = "guards"
    holder_id: Mapped[str] = mapped_column(ForeignKey("holders.id"), primary_key=True)
    pin_hash: Mapped[str] = mapped_column(String(255))
    can_override: Mapped[bool] = mapped_column(Boolean, default=False)  # may force a grant despite a denial
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_pins: Mapped[int] = mapped_column(Integer, default=0)  # wrong PINs in a row
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    holder: Mapped[Holder] = relationship()


class GuardSession(Base):
    """A guard at a reader's post, from login until they leave it or go idle. Only the token's SHA-256 is kept."""

    __tablename__ = "guard_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder_id: Mapped[str] = mapped_column(ForeignKey("guards.holder_id"), index=True)
    reader: Mapped[str] = mapped_column(String(48))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

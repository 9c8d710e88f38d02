"""What the turnstile's display says, in French and English, within OSDP's 32 characters.

The guards passing the gates come from many countries; the two languages of the event are French and English.
Texts are plain ASCII (controller displays rarely have accents) and stay readable at a glance.
"""

from __future__ import annotations

from firmware_bridge.wiring import TEXT_MAX_CHARS

GRANTED = "ACCES AUTORISE / GRANTED"
DENIED = "REFUSE/DENIED"

# Reason code (docs/protocol.md) -> the few words a guard needs. Codes not listed show themselves.
_REASONS = {
    "unknown_reader": "CONFIG",
    "unknown_gate": "CONFIG",
    "token_malformed": "INVALIDE/INVALID",
    "bad_signature": "INVALIDE/INVALID",
    "unknown_kid": "INVALIDE/INVALID",
    "wrong_typ": "INVALIDE/INVALID",
    "wrong_issuer": "INVALIDE/INVALID",
    "unknown_holder": "INVALIDE/INVALID",
    "nonce_reused": "INVALIDE/INVALID",
    "not_yet_valid": "PAS ENCORE/NOT YET",
    "expired": "EXPIRE/EXPIRED",
    "revoked": "REVOQUE/REVOKED",
    "holder_suspended": "SUSPENDU/SUSPENDED",
    "zone_not_permitted": "ZONE",
    "zone_closed": "FERME/CLOSED",
    "role_not_permitted": "ROLE",
    "qualification_missing": "QUALIFICATION",
    "qualification_expired": "QUALIFICATION",
    "outside_schedule": "HORAIRE/SCHEDULE",
    "outside_shift": "HORAIRE/SCHEDULE",
    "anti_passback": "DEJA ENTRE/INSIDE",
    "zone_full": "COMPLET/FULL",
    "not_logged": "ERREUR/ERROR",
    "gateway_unreachable": "ERREUR/ERROR",
}


def grant_text() -> str:
    return GRANTED


def deny_text(reason: str) -> str:
    """ "REFUSE/DENIED" and why, at most 32 characters."""
    words = _REASONS.get(reason, reason.replace("_", " ").upper())
    return f"{DENIED} {words}"[:TEXT_MAX_CHARS].rstrip()

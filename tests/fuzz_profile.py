"""Hypothesis settings for the fuzz tests (tests/test_fuzz_*.py), chosen by ACCESSGW_FUZZ_PROFILE.

`fuzz` (the default) keeps all fuzz tests well under a minute on the developers' 2-core machines; `fuzz-report`
runs ten times as many cases, for the figures in docs/security.md. Each test states max_examples through these
settings, never Hypothesis' own default, so the counts in the report are the counts that ran.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "derandomize": False, "suppress_health_check": [HealthCheck.too_slow]}
PROFILES = {
    "fuzz": {"fast": 100, "slow": 20},
    "fuzz-report": {"fast": 1000, "slow": 200},
}
PROFILE = os.environ.get("ACCESSGW_FUZZ_PROFILE", "fuzz")
if PROFILE not in PROFILES:
    raise ValueError(f"ACCESSGW_FUZZ_PROFILE must be one of {', '.join(PROFILES)}")

FAST = settings(max_examples=PROFILES[PROFILE]["fast"], **_COMMON)  # pure parsers, microseconds a case
SLOW = settings(max_examples=PROFILES[PROFILE]["slow"], **_COMMON)  # a database or the Flask app behind each case

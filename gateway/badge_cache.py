"""Badge tokens already checked, by their exact text: a guard's badge is scanned at every gate, all day.

`tokens.verify_token` is a pure function of the token text and the accepted keys (it does not look at the
clock: validity times, revocation and everything else are judged per decision, at `now`, by the core). So a
token that verified once verifies again while the same keys are accepted, and its claims can be reused. The
cache forgets everything when the accepted keys change (a rotation or a retired key) and keeps only tokens that
verified: a refused token is checked in full every time, so garbage cannot fill the cache. Its bound is in
entries, least recently used first out. One cache serves one decision service (one issuer, one site).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping

from gateway import tokens
from gateway.core import BadgeClaims, TokenProblem

DEFAULT_ENTRIES = 65_536  # ~50 MB at most: a day's badges at a large site; each token is < 1 KB


class VerifiedBadges:
    def __init__(self, entries: int = DEFAULT_ENTRIES) -> None:
        self.entries = entries
        self.hits = 0
        self.misses = 0
        self._claims: OrderedDict[str, BadgeClaims] = OrderedDict()
        self._keys: object = None  # the accepted-keys mapping the cached claims were verified with
        self._lock = threading.Lock()  # one decision thread uses it; a lock keeps any other caller safe

    def verify(
        self, token: str, keys: tokens.BadgeKeys, issuer: str, zone_for_badge_code: Mapping[str, str]
    ) -> BadgeClaims | TokenProblem:
        with self._lock:
            if keys is not self._keys:  # a reloaded keyring is a new mapping: start again
                self._claims.clear()
                self._keys = keys
            claims = self._claims.get(token)
            if claims is not None:
                self._claims.move_to_end(token)
                self.hits += 1
                return claims
            self.misses += 1
        result = tokens.verify_token(token, keys, issuer, zone_for_badge_code)
        if isinstance(result, BadgeClaims) and self.entries > 0:
            with self._lock:
                if keys is self._keys:  # not if the keys changed while this one was checked
                    self._claims[token] = result
                    if len(self._claims) > self.entries:
                        self._claims.popitem(last=False)
        return result

"""The chain hash's fast paths give exactly the hash of its definition (audit_hash's docstring), for any field."""

from __future__ import annotations

import datetime as dt
import hashlib
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit_hash import FIELDS, chain_hash, hash_encoded, hash_texts, text


def reference(prev_hash: str, seq: int, values: list[object]) -> str:
    """The definition, written the plain way."""
    out = b"acs-audit-v1\n" + bytes.fromhex(prev_hash)
    for value in (seq, *values):
        if value is None:
            t = "\x00"
        elif isinstance(value, bool):
            t = "1" if value else "0"
        elif isinstance(value, dt.datetime):
            t = value.isoformat(timespec="milliseconds")
        else:
            t = str(value)
        data = t.encode("utf-8")
        out += struct.pack(">I", len(data)) + data
    return hashlib.sha256(out).hexdigest()


texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), min_size=120, max_size=140),  # around the 128-char fast path
    st.text(min_size=0, max_size=300),  # any Unicode, long
    st.just("x" * 5000),  # beyond the 4,096-byte prefix table
)
values = st.one_of(
    texts,
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.datetimes(timezones=st.just(dt.UTC)),
)


@settings(max_examples=300)
@given(
    prev=st.binary(min_size=32, max_size=32).map(bytes.hex),
    seq=st.integers(min_value=1, max_value=10**12),
    row=st.lists(values, min_size=len(FIELDS), max_size=len(FIELDS)),
)
def test_every_path_gives_the_defined_hash(prev: str, seq: int, row: list[object]) -> None:
    expected = reference(prev, seq, row)
    assert chain_hash(prev, seq, row) == expected
    as_texts = [text(v) for v in row]
    assert hash_texts(prev, str(seq), as_texts) == expected
    assert hash_encoded(prev.encode(), seq, [t.encode() for t in as_texts]) == expected.encode()


def test_a_non_ascii_field_of_few_characters_is_counted_in_bytes() -> None:
    # "é" is one character but two bytes: the all-ASCII shortcut must not take it.
    row: list[object] = ["décision", *[""] * (len(FIELDS) - 1)]
    assert hash_texts("00" * 32, "1", [text(v) for v in row]) == reference("00" * 32, 1, row)

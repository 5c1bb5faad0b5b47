"""JSON in and out: what the compiled writer stores is what the standard library stored, what it cannot write is
written as before, and the parser refuses exactly the texts no column could hold."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.jsontext import JSONError, compact_json, parse_json

STANDARD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
text = st.text(st.characters(exclude_categories=("Cs",)))  # any character a column can store
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text
documents = st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(text, inner), max_leaves=30)


@given(documents)
def test_the_text_written_is_the_standard_librarys(doc: Any) -> None:
    assert compact_json(doc) == STANDARD.encode(doc)
    assert parse_json(compact_json(doc)) == doc
    assert parse_json(compact_json(doc).encode()) == doc


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_come_back_as_they_went(number: float) -> None:
    assert parse_json(compact_json({"amount": number})) == {"amount": number}


@pytest.mark.parametrize("doc", [{"big": 2**64}, {1: "a key that is not a string"}, [10**30, -(10**30)]])
def test_what_the_compiled_writer_refuses_is_written_as_before(doc: Any) -> None:
    assert compact_json(doc) == STANDARD.encode(doc)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"text": "\\ud800"}',  # half a UTF-16 pair, escaped
        b'{"text": "\\udfff\\ud800"}',  # both halves, in the wrong order
        b'{"text": "\xff"}',  # not UTF-8
        b'{"text": "\xed\xa0\x80"}',  # a surrogate encoded as if it were a character
        b"[NaN]",
        b'{"a": 1} trailing',
        b"[" * 2000 + b"]" * 2000,
    ],
)
def test_texts_no_column_could_hold_are_refused(raw: bytes) -> None:
    with pytest.raises(JSONError):
        parse_json(raw)
    with pytest.raises(ValueError):  # what callers that only know the standard library catch
        parse_json(raw)


def test_a_byte_order_mark_before_the_document_is_skipped() -> None:
    assert parse_json(b'\xef\xbb\xbf{"text": "\xe5\xa5\xbd"}\n') == {"text": "好"}
    with pytest.raises(JSONError):  # only at the start
        parse_json(b'{"text": 1}\xef\xbb\xbf')
    with pytest.raises(JSONError):  # UTF-16 is not read
        parse_json('{"text": 1}'.encode("utf-16"))


def test_a_whole_pair_is_one_character() -> None:
    assert parse_json(b'{"text": "\\ud83d\\ude00 \xe5\xa5\xbd"}') == {"text": "😀 好"}

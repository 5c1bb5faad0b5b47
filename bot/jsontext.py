"""JSON text in and out, one implementation for the whole program: orjson, a parser and writer in compiled code
(the ORM uses it too when it is installed, for its JSON columns).

``parse_json`` is strict where the standard library is lenient: the text must be valid UTF-8, and no string may
hold a lone surrogate (``"\\ud800"``). No database column can store such a string, so a document holding one is
refused where it arrives, with the other malformed ones, instead of failing the write that follows (a whole
import batch, a callback answered with a server error). NaN and Infinity are refused too.

Only UTF-8 is read: JSON exchanged between systems must be UTF-8 (RFC 8259), and a body in UTF-16 or UTF-32 is
refused like any other that is not.

``compact_json`` writes JSON as our columns store it: compact, Chinese kept as is.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

JSONError = json.JSONDecodeError  # what ``parse_json`` raises (orjson's error is a subclass); a ValueError
_STANDARD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_BOM = b"\xef\xbb\xbf"


def parse_json(text: bytes | str) -> Any:
    """The document in ``text``; ``JSONError`` if it is not JSON, not UTF-8, or holds a lone surrogate. Bytes may
    start with UTF-8's byte order mark, which editors on Windows write at the start of a file."""
    if isinstance(text, bytes) and text.startswith(_BOM):
        text = text[len(_BOM) :]
    return orjson.loads(text)


def compact_json(value: Any) -> str:
    """``value`` as compact JSON text, characters beyond ASCII as they are."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what orjson does not write (keys that are not strings, integers beyond 64 bits)
        return _STANDARD.encode(value)

"""Text shaping shared by every matcher: normalizing a line, trimming fillers off a slot, cutting spans out."""

from __future__ import annotations

import re
import unicodedata

_KEEP_WIDE = set("，：；！？（）")
_LEADING_FILLERS = re.compile(r"(?:[，,。.;；:：、\s]|了|的|帮我|帮忙|麻烦|请|一下)+")
# The trailing fillers (了 吧 哈 啊 呀 呢 一下 谢谢 谢了 多谢 and punctuation), spelled backwards: matched at the start
# of the reversed text, a run of them costs its length once; searched for with ``$`` at the end, it costs its
# length at every position it starts from, quadratic in a long run.
_TRAILING_FILLERS_REVERSED = re.compile(r"(?:[，,。.;；:：、\s]|了|吧|哈|啊|呀|呢|下一|谢谢|了谢|谢多)+")


def normalize(text: str) -> str:
    """Full-width letters, digits and signs to ASCII (Chinese punctuation kept as typed), spaces collapsed."""
    text = "".join(
        ch
        if ch in _KEEP_WIDE
        else unicodedata.normalize("NFKC", ch)
        if "\uff01" <= ch <= "\uff5e" or ch == "\u3000"
        else ch
        for ch in text
    )
    return re.sub(r"\s+", " ", text).strip()


def clean(text: str) -> str:
    """Trim punctuation, particles and politeness off both ends."""
    previous = None
    text = text.strip()
    while previous != text:
        previous = text
        if m := _LEADING_FILLERS.match(text):
            text = text[m.end() :]
        if m := _TRAILING_FILLERS_REVERSED.match(text[::-1]):
            text = text[: len(text) - m.end()]
        text = text.strip()
    return text


def cut(text: str, *spans: tuple[int, int] | None) -> str:
    """``text`` with the given spans replaced by a space."""
    chars = list(text)
    for span in spans:
        if span is None:
            continue
        for i in range(max(0, span[0]), min(len(chars), span[1])):
            chars[i] = " "
    return re.sub(r"\s+", " ", "".join(chars)).strip()

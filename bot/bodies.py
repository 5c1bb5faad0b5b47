"""Request bodies read whole, within a bound of the endpoint's own (below the server's ``client_max_size``).

A body may arrive in several pieces (chunked, or split across TCP segments): ``read_body`` reads to its end, so that
a signature is checked over, and a form parsed from, the whole of it, and stops as soon as it holds more than the
bound, so a large body costs no more than the bound to refuse.
"""

from __future__ import annotations

from aiohttp import web


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is larger than ``limit`` bytes (as declared or as sent)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for piece in request.content.iter_any():
        body += piece
        if len(body) > limit:
            return None
    return bytes(body)

"""The chat sidebar port: what a platform offers for a page opened beside a conversation with a customer contact.

A platform that can show a page in its chat window registers one ``SidebarPlatform`` under ``SIDEBAR``: where to
send the browser to sign the staff member in (``login_url``), how to turn the one-time code it comes back with into
the platform's user id (``user_of``), the values its page script needs to ask the chat window which customer
contact is open (``page_config``, signatures computed on the server), the external script that script relies on
(``sdk_url``, the only one the page's content policy allows) and the script itself (``script``, served by the bot).
The page, its data and its actions are a capability's (``handlers/sidebar``); it sees only this port.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


class SidebarUnavailable(Exception):
    """The platform could not answer now (network, configuration): try again later; nothing is refused."""


@dataclass(frozen=True, slots=True)
class SidebarPlatform:
    """One platform's side of the sidebar; ``platform`` names its identity (whose accounts are staff)."""

    platform: str
    # (the page's address to come back to, an opaque state) → where the browser signs in
    login_url: Callable[[str, str], str]
    # the one-time code the browser came back with → the platform's user id (None: refused or not a staff member);
    # raises ``SidebarUnavailable`` when the platform cannot answer now
    user_of: Callable[[str], Awaitable[str | None]]
    # the page's address as the browser shows it → what the page script needs (opaque to the core)
    page_config: Callable[[str], Awaitable[dict[str, Any]]]
    sdk_url: str
    script: str


SIDEBAR = web.AppKey("sidebar", SidebarPlatform)

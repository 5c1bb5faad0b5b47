"""The chat sidebar (聊天工具栏): a small page beside a rep's conversation with a customer contact that shows that
customer's profile card, latest follow-ups, open tickets and open opportunities, and logs a follow-up or opens a
ticket in two taps through the same intents as chat (``views``, ``card``, ``session``). The platform's part
(sign-in, SDK signatures, the script that names the open chat's contact) comes through the ``bot.sidebar`` port."""

from handlers.sidebar import card, session, views
from handlers.sidebar.capability import capability

__all__ = ["capability", "card", "session", "views"]

"""Orders from the ERP: the signed webhook (``webhook``), the spreadsheet import (``spreadsheet``), the scheduled
rules (``rules``: status notices, overdue payments, repurchase windows; ``grading``: grades from purchases) and orders
in chat (``chat``). Order
events of every origin take the one path of ``bot.orderflow``."""

from handlers.orders import chat, grading, rules, spreadsheet, webhook
from handlers.orders.capability import capability
from handlers.orders.spreadsheet import import_orders

__all__ = ["capability", "chat", "grading", "import_orders", "rules", "spreadsheet", "webhook"]

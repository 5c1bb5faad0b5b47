"""Platform integrations, one package per platform: the only code that knows platform field names.

``PLATFORMS`` lists them for the app factory. The order matters: a staff member is reached on the first platform
(in this order) that reaches them.
"""

from bot.integration import Integration
from integrations import console, dingtalk, tplus, wecom

PLATFORMS: list[Integration] = [wecom.INTEGRATION, dingtalk.INTEGRATION, console.INTEGRATION, tplus.INTEGRATION]

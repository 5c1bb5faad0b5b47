"""Excel exports: ``crmbot export KIND FILE.xlsx`` (``export``: scope and files; ``sheets``: the data sheets;
``report``: the summary sheets; ``workbook``: the streaming writer) and ``导出我的客户`` in chat (``chat``)."""

from handlers.exports import chat, export, report, sheets, workbook
from handlers.exports.capability import capability

__all__ = ["capability", "chat", "export", "report", "sheets", "workbook"]

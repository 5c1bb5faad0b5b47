"""NPS surveys: ask 15 days after a delivery (``survey``), capture the 0–10 answer from the survey page (``page``)
or the customer's chat reply and act on it (``answers``), and report NPS by rep, team and period (``report``)."""

from handlers.nps import answers, page, report, survey
from handlers.nps.capability import capability

__all__ = ["answers", "capability", "page", "report", "survey"]

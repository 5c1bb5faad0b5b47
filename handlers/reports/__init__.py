"""What managers look at: the health model (five metrics with traffic lights and a weighted score), data quality,
the customer health score and the customers at risk, reports in chat with a chart, the weekly and monthly reports
pushed to managers, and the signed manager dashboard page.

``health`` computes the metrics in SQL, ``risk`` the customer health score (and its line on the profile card),
``summary`` the report, ``charts`` its chart, ``send`` how a report leaves, ``chat`` the intents, ``pushes`` the
scheduled reports, ``links`` the signed dashboard links and ``page`` the dashboard.
"""

from handlers.reports import chat, page, pushes, risk
from handlers.reports.capability import capability

__all__ = ["capability", "chat", "page", "pushes", "risk"]

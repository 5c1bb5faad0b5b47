"""The sales pipeline: opportunities (商机) with amounts and stage history, the funnel, performance against
targets and forecasts, the rep's day, and stage playbooks run by the scheduled rules engine.

The modules: ``deals`` (probability, weighting, finding and moving a deal, the customer's stage following its
deals), ``opportunities`` (the chat intents that open, move and fill in deals), ``funnel`` (funnel, performance,
targets), ``day`` (the rep's day), ``playbooks`` (stage playbooks and stalled deals as rules), ``imports``
(``crmbot import opportunities|targets``).
"""

from handlers.pipeline import day, deals, funnel, imports, opportunities, playbooks
from handlers.pipeline.capability import capability

__all__ = ["capability", "day", "deals", "funnel", "imports", "opportunities", "playbooks"]

"""``GET /metrics`` in the Prometheus text format, from a registry that belongs to the app (no global state).

Counted in process: callbacks by platform and result (``ok``, ``duplicate``, or the HTTP status of a rejection),
the time to verify, decrypt, store and acknowledge a callback, and HTTP requests by route and status. Read from
the database at scrape time, so they are right across restarts and shared by every instance: outbox rows by status
with the totals sent, retried and failed, and the handling latency (from a message being stored to its handling
being committed) of messages handled since the previous scrape.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from bot import sql
from models.messages import Message

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OUTBOX_STATUSES = ("pending", "sending", "sent", "failed")
SCAN_LIMIT = 10_000


class _OutboxCollector(Collector):
    """Outbox figures as of the last ``refresh`` (collectors are synchronous; the database is not)."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = dict.fromkeys(OUTBOX_STATUSES, 0)
        self.attempts: dict[str, int] = dict.fromkeys(OUTBOX_STATUSES, 0)

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("crmbot_outbox_messages", "Outbox rows by status", labels=["status"])
        for status in OUTBOX_STATUSES:
            by_status.add_metric([status], self.rows.get(status, 0))
        yield by_status
        yield GaugeMetricFamily("crmbot_outbox_pending", "Outbox rows waiting to be sent", value=self.rows["pending"])
        yield CounterMetricFamily("crmbot_outbox_sent", "Outbox messages delivered", value=self.rows["sent"])
        yield CounterMetricFamily(
            "crmbot_outbox_failed",
            "Outbox messages given up (permanent error or attempts exhausted)",
            value=self.rows["failed"],
        )
        # Every attempt that did not end a row was a failure the outbox rescheduled.
        finished = sum(n for s, n in self.rows.items() if s != "pending")
        retried = max(sum(self.attempts.values()) - finished, 0)
        yield CounterMetricFamily(
            "crmbot_outbox_retried", "Failed sends rescheduled for a later attempt", value=retried
        )


class _RequestCollector(Collector):
    """Callbacks and HTTP responses, counted on every request.

    Plain counts read at scrape time: everything runs on the event loop's thread, so the per-update locks of
    ``prometheus_client``'s own metric types, paid several times on every callback, buy nothing here.
    """

    def __init__(self) -> None:
        self.callbacks: Counter[tuple[str, str]] = Counter()
        self.callback_buckets: dict[str, list[int]] = {}  # per platform: one count per bucket, then +Inf
        self.callback_sum: dict[str, float] = {}
        self.http: Counter[tuple[str, str]] = Counter()

    def observe_callback(self, platform: str, seconds: float) -> None:
        buckets = self.callback_buckets.get(platform)
        if buckets is None:
            buckets = self.callback_buckets[platform] = [0] * (len(LATENCY_BUCKETS) + 1)
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.callback_sum[platform] = self.callback_sum.get(platform, 0.0) + seconds

    def collect(self) -> Iterator[Metric]:
        callbacks = CounterMetricFamily(
            "crmbot_callbacks", "Platform callbacks received", labels=["platform", "result"]
        )
        for labels, n in sorted(self.callbacks.items()):
            callbacks.add_metric(labels, n)
        yield callbacks
        seconds = HistogramMetricFamily(
            "crmbot_callback_seconds", "Time to verify, decrypt, store and acknowledge a callback", labels=["platform"]
        )
        bounds = [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
        for platform, counts in sorted(self.callback_buckets.items()):
            cumulative = itertools.accumulate(counts)
            seconds.add_metric([platform], list(zip(bounds, cumulative, strict=True)), self.callback_sum[platform])
        yield seconds
        http = CounterMetricFamily("crmbot_http_requests", "HTTP requests served", labels=["route", "status"])
        for labels, n in sorted(self.http.items()):
            http.add_metric(labels, n)
        yield http


class Metrics:
    """The app's metrics; ``app[METRICS]``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = _RequestCollector()
        self.registry.register(self._requests)
        self.handling_seconds = Histogram(
            "crmbot_handling_seconds",
            "From a message being stored to its handling being committed",
            ["platform"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._outbox = _OutboxCollector()
        self.registry.register(self._outbox)
        self._watermark: int | None = None  # messages up to this id have been observed
        self._observed: set[int] = set()  # handled messages above the watermark already observed

    def callback(self, platform: str, result: str, seconds: float | None = None) -> None:
        self._requests.callbacks[platform, result] += 1
        if seconds is not None:
            self._requests.observe_callback(platform, seconds)

    def http_request(self, route: str, status: int) -> None:
        self._requests.http[route, str(status)] += 1

    async def start(self) -> None:
        """Only messages stored from now on count towards the handling latency."""
        last = await Message.all().order_by("-id").limit(1).values_list("id", flat=True)
        self._watermark = int(str(last[0])) if last else 0

    async def refresh(self) -> None:
        await self._refresh_outbox()
        await self._observe_handling()

    async def _refresh_outbox(self) -> None:
        rows = await sql.default().execute_query_dict(
            "SELECT status, COUNT(*) AS n, COALESCE(SUM(attempts), 0) AS attempts FROM outbox GROUP BY status"
        )
        self._outbox.rows = dict.fromkeys(OUTBOX_STATUSES, 0)
        self._outbox.attempts = dict.fromkeys(OUTBOX_STATUSES, 0)
        for row in rows:
            self._outbox.rows[str(row["status"])] = int(row["n"])
            self._outbox.attempts[str(row["status"])] = int(row["attempts"])

    async def _observe_handling(self) -> None:
        if self._watermark is None:
            await self.start()
        assert self._watermark is not None
        rows = (
            await Message.filter(id__gt=self._watermark, to_bot=True)
            .order_by("id")
            .limit(SCAN_LIMIT)
            .values_list("id", "platform", "received_at", "handled_at")
        )
        watermark, blocked = self._watermark, False
        for message_id, platform, received_at, handled_at in rows:
            if handled_at is None:
                blocked = True  # still in progress: the watermark stays below it
                continue
            if message_id not in self._observed:
                seconds = max((handled_at - received_at).total_seconds(), 0.0)
                self.handling_seconds.labels(platform).observe(seconds)
                self._observed.add(message_id)
            if not blocked:
                watermark = message_id
        self._watermark = watermark
        self._observed = {i for i in self._observed if i > watermark}

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


async def metrics_view(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    await metrics.refresh()
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def count_response(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, errors included, counted by route and status (a signal rather
    than a middleware: it costs every request less)."""
    route = request.match_info.route.resource
    request.app[METRICS].http_request(route.canonical if route is not None else "unmatched", response.status)


class CallbackTimer:
    """``with CallbackTimer(app, "wecom") as t: ...; t.result = "ok"`` counts one callback and its duration;
    an HTTP error raised inside counts as its status."""

    def __init__(self, app: web.Application, platform: str) -> None:
        self.metrics = app[METRICS]
        self.platform = platform
        self.result = "error"
        self._started = 0.0

    def __enter__(self) -> CallbackTimer:
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, web.HTTPException):
            self.result = str(exc.status)
        self.metrics.callback(self.platform, self.result, time.perf_counter() - self._started)

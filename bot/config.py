"""Settings: a TOML file validated into typed sections, overridden by ``CRMBOT_<SECTION>__<KEY>`` variables.

pydantic-settings does the validation and the environment overrides; this module owns the core schema (every key
documented in ``config.example.toml``), the defaults, and turning validation failures into one clear
``ConfigError`` that names the offending keys. Each chat platform's section is defined by its
integration as a ``PlatformSettings`` and joins the schema through ``settings_class``, which the composition
root calls with every integration's section.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

DEFAULT_CONFIG_PATH = Path("config.toml")
P = TypeVar("P", bound="PlatformSettings")
T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    # Which requests `crmbot serve` logs: "errors" (answered 400 or above: refused signatures, malformed bodies),
    # "all", or "off". Every callback is counted and timed in /metrics; a line per request costs the event loop
    # more than verifying the callback's signature.
    access_log: Literal["errors", "all", "off"] = "errors"
    # What this instance does (docs/SCALING.md). "all": acknowledges callbacks, handles the messages, sends the
    # outbox and runs the rules. "web": acknowledges only (stores each callback and answers the platform), so that
    # handling never holds up an acknowledgement; "worker" instances on the same database handle what it stored,
    # looking for it every handling_poll_seconds, and send and run the rules as "all" does. "web" and "worker" need
    # PostgreSQL (SQLite has one writer: one instance).
    role: Literal["all", "web", "worker"] = "all"
    handling_poll_seconds: float = Field(0.2, gt=0)


class DatabaseSettings(_Section):
    url: str = "sqlite://crmbot.sqlite3"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgres://", "postgresql://", "asyncpg://")):
            raise ValueError("must start with sqlite:// or postgres://")
        return value


class PlatformSettings(_Section):
    """A platform's own section, defined by its integration."""

    @property
    def enabled(self) -> bool:
        return False

    def secrets(self) -> tuple[str, ...]:
        """The secret values (in a fixed order) that keys derived from the configuration are made from."""
        return ()


class OutboxSettings(_Section):
    max_attempts: int = Field(12, ge=1)
    backoff_initial_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(300.0, gt=0)
    # A claim's lease is renewed every quarter of it while its sends run, so a crashed instance's rows come back
    # within one lease; a send is cut off after send_timeout_seconds (at most half the lease, see bot/channels.py).
    lease_seconds: float = Field(20.0, gt=0)
    send_timeout_seconds: float = Field(10.0, gt=0)
    poll_seconds: float = Field(1.0, gt=0)


class RulesSettings(_Section):
    ladder_warn_days: int = Field(7, ge=1)
    ladder_handover_days: int = Field(14, ge=1)
    ladder_handover_mode: Literal["manager", "pool"] = "manager"
    return_visit_days: int = Field(60, ge=1)
    contract_expiry_days: int = Field(30, ge=1)
    sla_first_response_minutes_normal: int = Field(120, ge=1)
    sla_first_response_minutes_urgent: int = Field(30, ge=1)
    ticket_revisit_hours: int = Field(24, ge=1)
    nps_delay_days: int = Field(15, ge=1)
    nps_period_days: int = Field(90, ge=1)
    approval_remind_hours: int = Field(4, ge=1)
    approval_escalate_hours: int = Field(24, ge=1)
    quiet_hours_start: time = time(20, 0)
    quiet_hours_end: time = time(9, 0)
    next_followup_grace_minutes: int = Field(0, ge=0)
    return_visit_staff: list[str] = Field(default_factory=list)
    return_visit_tag: str = "回访池"
    repurchase_lead_days: int = Field(7, ge=0)
    repurchase_min_orders: int = Field(3, ge=2)
    engine_interval_seconds: int = Field(60, ge=5)
    full_sweep_at: time = time(8, 30)
    undo_window_minutes: int = Field(10, ge=1)
    # Go-live: more handovers than this for one person in one pass arrive as one summary with a bulk command.
    handover_flood_threshold: int = Field(20, ge=1)
    handover_flood_list: int = Field(10, ge=1)
    baseline_on_import: bool = False  # imported customers' neglect counts from the import, not from old dates
    # Per grade, [warn days, handover days]; a customer with another grade (or none) uses the two above.
    ladder_by_grade: dict[str, tuple[int, int]] = Field(default_factory=dict)

    @field_validator("ladder_by_grade")
    @classmethod
    def _ladder_steps(cls, value: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        for grade, (warn, handover) in value.items():
            if len(grade) != 1 or not 1 <= warn < handover:
                raise ValueError(f"grade {grade!r}: one letter, with 1 <= warn days < handover days")
        return value

    def ladder_days(self, grade: str) -> tuple[int, int]:
        """The days without contact before the owner is warned, and before the customer is handed over."""
        return self.ladder_by_grade.get(grade, (self.ladder_warn_days, self.ladder_handover_days))


class NpsSettings(_Section):
    link_expiry_days: int = Field(14, ge=1)
    secret: str = ""  # signs survey tokens; empty: derived from the platforms' app secrets


class SidebarSettings(_Section):
    secret: str = ""  # signs sidebar sessions and their form tokens; empty: derived from the platforms' app secrets
    session_minutes: int = Field(30, ge=1, le=24 * 60)  # a signed-in sidebar asks the platform again after this
    note_max_chars: int = Field(2000, ge=10, le=20000)  # a follow-up note or a ticket description, at most


class ApprovalSettings(_Section):
    """How a discount request is routed: the requester's manager always decides first; a deeper discount or a
    larger contract adds the director, then an admin (a chain has at most these three levels)."""

    director_below: float = Field(0.9, gt=0, le=1)
    admin_below: float = Field(0.8, gt=0, le=1)
    amount_levels: list[float] = Field(default_factory=lambda: [5_000_000.0])
    recent_discounts: int = Field(3, ge=0, le=10)

    @field_validator("amount_levels")
    @classmethod
    def _positive_amounts(cls, value: list[float]) -> list[float]:
        if any(a <= 0 for a in value):
            raise ValueError("amounts must be positive (yuan)")
        return sorted(value)


class TicketSettings(_Section):
    """Who gets a new ticket: the configured service engineers in turn (the one with the fewest open tickets,
    then the one assigned longest ago), else the customer's owner, else whoever opened it."""

    service_engineers: list[str] = Field(default_factory=list)  # staff names or platform user ids


class KeywordSettings(_Section):
    """Keyword rules on archived customer messages (``handlers.keywords``)."""

    ticket_words: list[str] = Field(
        default_factory=lambda: [
            "故障",
            "坏了",
            "坏掉",
            "不能用",
            "用不了",
            "漏油",
            "漏水",
            "异响",
            "报警",
            "停机",
            "失灵",
            "投诉",
            "维修",
            "出问题了",
        ]
    )
    urgent_words: list[str] = Field(default_factory=lambda: ["紧急", "急", "停产", "停机", "马上", "尽快", "投诉"])
    ticket_mode: Literal["open", "suggest", "off"] = "suggest"
    buying_words: list[str] = Field(
        default_factory=lambda: [
            "报价",
            "价格",
            "多少钱",
            "价钱",
            "报个价",
            "优惠",
            "折扣",
            "合同",
            "采购",
            "下单",
            "订货",
            "交期",
            "货期",
        ]
    )
    buying_signal_field: str = "购买信号"
    buying_signal_tag: str = "有购买信号"
    negations: list[str] = Field(default_factory=lambda: ["没有", "没", "不是", "已经好了", "修好了", "已解决"])


class SearchSettings(_Section):
    """Keyword search over the archive (``bot.search``)."""

    count_bound: int = Field(1_000, ge=20, le=10_000_000)  # totals exact up to this many hits, estimated beyond


OrderStatusCode = Literal["placed", "production", "packed", "shipped", "received", "invoiced", "paid", "cancelled"]
NOTIFY_STATUSES: tuple[OrderStatusCode, ...] = ("packed", "shipped", "received")


class ErpSettings(_Section):
    """Orders from the ERP (``bot.orderflow``, ``handlers.orders``): the signed webhook, the nightly pull, status
    notices and overdue payments."""

    webhook_secret: str = ""  # HMAC-SHA256 key of POST /erp/orders; empty: the endpoint refuses everything
    timestamp_tolerance_seconds: int = Field(300, ge=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_events: int = Field(1000, ge=1)
    notify_statuses: list[OrderStatusCode] = Field(default_factory=lambda: list(NOTIFY_STATUSES))
    notice_max_age_days: int = Field(3, ge=1)  # older status changes (a first sync, an import) are not announced
    payment_overdue_days: int = Field(30, ge=1)
    sync_at: time = time(2, 0)  # local time of the nightly pull
    sync_check_seconds: int = Field(300, ge=5)
    fetch_attempts: int = Field(4, ge=1)
    retry_backoff_seconds: float = Field(2.0, ge=0)
    sync_batch_events: int = Field(1000, ge=1)  # a pull commits its pages in groups of about this many events
    # Yuan bought over the last 12 months (cancelled orders aside) from which a customer is of a grade, e.g.
    # {A = 1000000, B = 300000}; below every threshold, C. Empty: grades are not computed.
    grade_thresholds: dict[Literal["A", "B", "C"], int] = Field(default_factory=dict)
    auto_grade: bool = False  # apply a computed grade (audited) instead of suggesting it to the owner
    # Product lines of ERPs that send none (no 存货分类): line name → product name patterns (shell-style, case
    # insensitive), e.g. {"液压缸" = ["液压缸*", "HC-*"]}; the first line with a matching pattern wins.
    product_lines: dict[str, list[str]] = Field(default_factory=dict)
    # A product line has a rhythm (for customers with too few orders of it) once this many customers have their own.
    line_min_customers: int = Field(3, ge=1)


STAGE_CODES = ("lead", "intent", "proposal", "quote", "negotiation", "won", "lost")


class CadenceStep(_Section):
    """A follow-up suggested ``day`` days into a stage, with the wording to use."""

    day: int = Field(ge=1)
    text: str


class Playbook(_Section):
    """What entering one stage sets off (``handlers.pipeline``): who is told what (``notify``: staff names or
    user ids, ``owner``, ``manager``), a checklist, a countdown that escalates to ``escalate_to`` when the deal is
    still in the stage, follow-up suggestions to the owner, and the fields a deal needs before it may enter."""

    notify: list[str] = Field(default_factory=lambda: ["owner"])
    text: str = ""
    checklist: list[str] = Field(default_factory=list)
    countdown_days: int = Field(0, ge=0)
    escalate_to: list[str] = Field(default_factory=lambda: ["manager"])
    cadence: list[CadenceStep] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)


class PipelineSettings(_Section):
    """Opportunities and the funnel: win probability and stall threshold per stage, playbooks per stage."""

    probabilities: dict[str, float] = Field(
        default_factory=lambda: {"lead": 0.1, "intent": 0.2, "proposal": 0.4, "quote": 0.6, "negotiation": 0.8}
    )
    stall_days: dict[str, int] = Field(
        default_factory=lambda: {"lead": 30, "intent": 21, "proposal": 14, "quote": 14, "negotiation": 10}
    )
    closing_soon_days: int = Field(14, ge=1)
    playbooks: dict[str, Playbook] = Field(default_factory=dict)

    @field_validator("probabilities", "stall_days", "playbooks")
    @classmethod
    def _known_stages(cls, value: dict[str, Any]) -> dict[str, Any]:
        if unknown := sorted(set(value) - set(STAGE_CODES)):
            raise ValueError(f"unknown stage {', '.join(unknown)} (one of {', '.join(STAGE_CODES)})")
        return value


class PoolSettings(_Section):
    """The public pool (公海): how much a rep may claim, and how long before a released customer may be reclaimed."""

    claims_per_day: int = Field(5, ge=0)
    max_held: int = Field(50, ge=0)  # pool-claimed customers one rep may hold at once
    cooldown_days: int = Field(30, ge=0)  # a rep cannot reclaim a customer they released for this long
    page_size: int = Field(10, ge=1, le=50)


class LeadRoute(_Section):
    """Leads from ``region`` and/or in ``industry`` (empty: any) go to the reps of ``team`` (their manager's name)."""

    region: str = ""
    industry: str = ""
    team: str


class LeadSettings(_Section):
    """Who takes a customer without an owner (a lead): the first matching route's team, its least-loaded rep."""

    routes: list[LeadRoute] = Field(default_factory=list)
    max_open_per_rep: int = Field(20, ge=1)  # leads (customers at 潜在) one rep may hold
    return_hours: int = Field(48, ge=1)  # an assigned lead nobody followed up returns to the pool after this
    secret: str = ""  # signs POST /leads (hex HMAC-SHA256 of the body in X-Crmbot-Signature); empty: no endpoint


METRICS: tuple[str, ...] = ("conversion", "aov_growth", "sla", "nps", "activity")
QUALITY_CHECKS: tuple[str, ...] = ("completeness", "updates", "closure")
PROFILE_FIELDS: tuple[str, ...] = ("industry", "grade", "contract_end", "contact", "phone", "next_followup_at")
THRESHOLDS: dict[str, tuple[float, float]] = {
    "conversion": (0.3, 0.15),
    "aov_growth": (0.05, -0.05),
    "sla": (0.9, 0.75),
    "nps": (30.0, 0.0),
    "activity": (0.8, 0.5),
}
WEIGHTS: dict[str, float] = {"conversion": 0.25, "aov_growth": 0.15, "sla": 0.2, "nps": 0.2, "activity": 0.2}
QUALITY_THRESHOLDS: dict[str, tuple[float, float]] = {
    "completeness": (0.9, 0.7),
    "updates": (0.8, 0.6),
    "closure": (0.9, 0.7),
}


class ReportSettings(_Section):
    """The health model, data quality, the weekly and monthly reports and the manager dashboard."""

    # Per metric [green at least, yellow at least]; below yellow is red. Metrics not named keep their default.
    thresholds: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(THRESHOLDS))
    weights: dict[str, float] = Field(default_factory=lambda: dict(WEIGHTS))
    aov_source: Literal["deals", "orders"] = "deals"
    quality_thresholds: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(QUALITY_THRESHOLDS))
    required_fields: list[str] = Field(default_factory=lambda: ["industry", "grade", "contact", "phone"])
    update_days: int = Field(14, ge=1)  # an open deal untouched (no stage change, no follow-up) longer is stale
    at_risk_below: int = Field(60, ge=1, le=100)  # a customer health score below this is at risk
    at_risk_shown: int = Field(10, ge=1, le=50)
    weekly_weekday: int = Field(1, ge=1, le=7)  # 1 = Monday
    weekly_at: time = time(9, 0)
    monthly_day: int = Field(1, ge=1, le=28)
    monthly_at: time = time(9, 0)
    push_window_minutes: int = Field(60, ge=1, le=1440)  # a report not pushed this long after its time is skipped
    trend_periods: int = Field(6, ge=2, le=24)  # periods shown in the trend chart
    dashboard_link_days: int = Field(7, ge=1, le=90)
    dashboard_secret: str = ""  # signs dashboard links; empty: derived from the platforms' app secrets

    @field_validator("thresholds")
    @classmethod
    def _metric_thresholds(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        return {**THRESHOLDS, **_known_keys(value, METRICS)}

    @field_validator("weights")
    @classmethod
    def _metric_weights(cls, value: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in value.values()):
            raise ValueError("weights cannot be negative")
        return {**WEIGHTS, **_known_keys(value, METRICS)}

    @field_validator("quality_thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        return {**QUALITY_THRESHOLDS, **_known_keys(value, QUALITY_CHECKS)}

    @field_validator("required_fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        if unknown := [f for f in value if f not in PROFILE_FIELDS]:
            raise ValueError(f"unknown profile field(s) {unknown}; known: {', '.join(PROFILE_FIELDS)}")
        return value


def _known_keys(value: dict[str, T], known: tuple[str, ...]) -> dict[str, T]:
    if unknown := sorted(set(value) - set(known)):
        raise ValueError(f"unknown key(s) {unknown}; known: {', '.join(known)}")
    for key, pair in value.items():
        if isinstance(pair, tuple) and len(pair) == 2 and pair[0] < pair[1]:
            raise ValueError(f"{key}: the green threshold must be at least the yellow one")
    return value


class FilesSettings(_Section):
    """Files the bot hands out (exports, charts): how long they are kept and how their download links are signed."""

    keep_hours: int = Field(72, ge=1)  # a stored file is deleted this long after it was made
    link_hours: int = Field(24, ge=1)  # a download link works this long (410 once the file is swept)
    secret: str = ""  # signs download links; empty: derived from the platforms' app secrets
    console_dir: str = "crmbot-files"  # where `crmbot chat` writes the files it is sent


class Settings(BaseSettings):
    """The whole configuration; see ``config.example.toml`` for every key."""

    model_config = SettingsConfigDict(
        env_prefix="CRMBOT_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    timezone: str = "Asia/Shanghai"
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    outbox: OutboxSettings = OutboxSettings()
    rules: RulesSettings = RulesSettings()
    approvals: ApprovalSettings = ApprovalSettings()
    nps: NpsSettings = NpsSettings()
    sidebar: SidebarSettings = SidebarSettings()
    tickets: TicketSettings = TicketSettings()
    keywords: KeywordSettings = KeywordSettings()
    search: SearchSettings = SearchSettings()
    erp: ErpSettings = ErpSettings()
    pipeline: PipelineSettings = PipelineSettings()
    pool: PoolSettings = PoolSettings()
    leads: LeadSettings = LeadSettings()
    reports: ReportSettings = ReportSettings()
    files: FilesSettings = FilesSettings()
    # Platform sections are added by ``settings_class``.

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _roles_share_postgres(self) -> Settings:
        if self.server.role != "all" and self.database.url.startswith("sqlite://"):
            raise ValueError(
                f'server.role = "{self.server.role}" shares the database with other instances: it needs PostgreSQL'
                ' (database.url = postgres://…); on SQLite one instance does everything (role = "all")'
            )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def platform(self, name: str, kind: type[P]) -> P:
        """The ``[name]`` platform section, as its integration defined it."""
        section = getattr(self, name, None)
        if not isinstance(section, kind):
            raise ConfigError(f"no [{name}] section of type {kind.__name__} in these settings")
        return section

    def platforms(self) -> list[PlatformSettings]:
        """Every platform section, in the order the integrations were registered."""
        sections = (getattr(self, name) for name in type(self).model_fields)
        return [section for section in sections if isinstance(section, PlatformSettings)]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, which arrives as init kwargs.
        return (env_settings, init_settings)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")  # a validator's own words
        parts.append(f"{key}: {message}" if key else message)
    return "; ".join(parts)


@functools.cache
def _settings_class(sections: tuple[tuple[str, type[PlatformSettings]], ...]) -> type[Settings]:
    if not sections:
        return Settings
    fields: dict[str, Any] = {name: (kind, Field(default_factory=kind)) for name, kind in sections}
    return create_model("Settings", __base__=Settings, **fields)


def settings_class(sections: Mapping[str, type[PlatformSettings]]) -> type[Settings]:
    """``Settings`` with these platform sections (by section name), built once per set of sections."""
    return _settings_class(tuple(sections.items()))


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    sections: Mapping[str, type[PlatformSettings]] | None = None,
    **overrides: Any,
) -> Settings:
    """Load ``path`` (default ``./config.toml`` when present), apply env overrides, validate.

    ``sections`` are the platform sections to accept; ``overrides`` are sections given as dicts (used by tests and
    the CLI) and are merged over the file.
    """
    data: dict[str, Any] = {}
    file = Path(path) if path is not None else (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {file}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    try:
        return settings_class(sections or {})(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc)}") from exc
    except SettingsError as exc:  # an environment variable that cannot be parsed, e.g. CRMBOT_WECOM=x
        raise ConfigError(f"invalid configuration: {exc}") from exc

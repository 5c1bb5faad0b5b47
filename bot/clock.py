"""Time for the whole app: one clock object, real by default, fixed or movable for tests and ``jobs run --now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """Returns aware UTC datetimes. ``set`` pins it (``jobs run --now``, story tests); ``advance`` moves it."""

    def __init__(self, fixed: datetime | None = None) -> None:
        self._fixed = fixed.astimezone(UTC) if fixed is not None else None

    def now(self) -> datetime:
        return self._fixed if self._fixed is not None else datetime.now(UTC)

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("the clock takes aware datetimes")
        self._fixed = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self._fixed = self.now() + delta

    @property
    def frozen(self) -> bool:
        return self._fixed is not None

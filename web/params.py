"""Query parameters of the API and the pages: parsed once, refused with a message that
names the parameter (400), or an unknown meter (404)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from meterpipe.common.errors import MeterpipeError

ENERGY_STEPS = ("quarter", "hour", "day", "month", "year")
EXPORT_STEPS = ("minute", "quarter", "hour", "day")
MAX_DAYS = {"minute": 31, "quarter": 366, "hour": 3660, "day": 36600, "month": 36600, "year": 36600}


class ParamError(MeterpipeError):
    """A request the web cannot answer as asked: a bad query parameter (``status`` 400), a meter
    that does not exist (404), the history database unable to answer (503)."""

    kind = "request"

    def __init__(self, parameter: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message
        self.status = status

    def as_json(self) -> dict[str, str]:
        return {"error": self.message, "parameter": self.parameter}


def meter(query: Mapping[str, str], known: Iterable[str], *, default: str | None = None) -> str:
    names = sorted(set(known))
    value = query.get("meter") or default or (names[0] if len(names) == 1 else None)
    if not value:
        raise ParamError("meter", "missing: meter=<name> (one of: " + (", ".join(names) or "none yet") + ")")
    if value not in names:
        raise ParamError("meter", f"no meter named {value!r} (have: {', '.join(names) or 'none yet'})", 404)
    return value


def choice(query: Mapping[str, str], name: str, choices: tuple[str, ...], default: str | None = None) -> str:
    value = query.get(name) or default
    if value is None:
        raise ParamError(name, f"missing: {name}=" + "|".join(choices))
    if value not in choices:
        raise ParamError(name, f"{value!r} is not one of " + ", ".join(choices))
    return value


def day(query: Mapping[str, str], name: str, default: date) -> date:
    value = query.get(name)
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ParamError(name, f"{value!r} is not a date YYYY-MM-DD") from exc


def day_range(query: Mapping[str, str], today: date, step: str, *, days_back: int = 0) -> tuple[date, date]:
    first = day(query, "from", today - timedelta(days=days_back))
    last = day(query, "to", max(first, today))
    if last < first:
        raise ParamError("to", f"{last} is before from={first}")
    if (last - first).days + 1 > MAX_DAYS[step]:
        raise ParamError("to", f"at most {MAX_DAYS[step]} days at step={step}")
    return first, last


def instant(query: Mapping[str, str], name: str, default: datetime, zone: ZoneInfo) -> datetime:
    """ISO-8601 with or without offset (local time without), or a date (its local midnight)."""
    value = query.get(name)
    if not value:
        return default
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "+") if "T" in value else value)
    except ValueError as exc:
        raise ParamError(name, f"{value!r} is not an ISO-8601 time, e.g. 2026-03-29T08:00:00+02:00") from exc
    return parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed


def instant_range(query: Mapping[str, str], zone: ZoneInfo, now: datetime, hours_back: float,
                  max_days: float = 400) -> tuple[datetime, datetime]:
    start = instant(query, "from", now - timedelta(hours=hours_back), zone)
    end = instant(query, "to", max(now, start), zone)
    if end <= start:
        raise ParamError("to", "must be after from")
    if end - start > timedelta(days=max_days):
        raise ParamError("to", f"at most {max_days:g} days from 'from'")
    return start, end


def name(query: Mapping[str, str], known: Iterable[str]) -> str:
    names = sorted(set(known))
    value = query.get("name")
    if not value:
        raise ParamError("name", "missing: name=<quantity> (one of: " + ", ".join(names) + ")")
    if value not in names:
        raise ParamError("name", f"no quantity {value!r} for this meter (have: {', '.join(names) or 'none'})", 404)
    return value

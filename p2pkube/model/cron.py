"""A CronJob's ``schedule`` and ``timeZone``, read as Kubernetes reads them.

Kubernetes parses schedules with robfig/cron's standard parser: five fields (minute, hour,
day of month, month, day of week), ``*``, ``?``, lists, ranges, steps, the three-letter names
of months and days, and the macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
``@daily`` (``@midnight``) and ``@hourly``. ``TZ=`` or ``CRON_TZ=`` in the schedule is
refused (the ``timeZone`` field says where the schedule is read). The times themselves come
from cronsim (a small, dependency-free evaluator that iterates over aware datetimes in a
zoneinfo zone, both ways); what this module adds is Kubernetes' syntax on top of it:

* cronsim's extensions that robfig does not know (a seconds field, ``L``, ``LW``, ``#``) are
  refused, so a schedule this accepts is one Kubernetes accepts;
* the day rule is robfig's: when both the day of month and the day of week are restricted
  the schedule fires on either (``0 0 */2 * 1``: every other day, and Mondays), and a field
  counts as unrestricted only when it is ``*`` or ``?`` (cronsim, like Debian's cron, also
  calls ``*/2`` unrestricted); such a schedule is evaluated as the union of its two halves.

No ``timeZone`` means UTC. Kubernetes uses the controller manager's local zone; here any node
may schedule a CronJob, and their local zones may differ, so the one shared answer is UTC.

This module is the model's (the manifest validator) and the scheduler's (the CronJob
controller), on native and browser nodes alike: it needs cronsim and, for zones other than
UTC, the time zone database (the system's, else the ``tzdata`` package).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""robfig/cron's descriptors, as Kubernetes accepts them (not ``@every``: p2pkube has no
interval schedules)."""

_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
_NAMES = {
    3: {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"},
    4: {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"},
}
"""Field index: the names it accepts (months, days of the week)."""
_FIELD_SYNTAX = re.compile(r"[0-9A-Za-z*?,/-]+")


class ScheduleError(ValueError):
    """A schedule or a time zone that cannot be used; the message says why."""


def zone(name: str | None) -> tzinfo:
    """The time zone a schedule is read in: UTC when unset; else the IANA zone ``name``."""
    if name is None or name in ("UTC", "Etc/UTC"):
        return UTC
    if name == "":
        raise ScheduleError("must be nil or a non-empty string")
    if name.lower() == "local":
        raise ScheduleError(
            "must be an explicit time zone as defined in https://www.iana.org/time-zones "
            "(nodes may be in different zones)"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r} (an IANA name such as Europe/Berlin or America/New_York)"
        ) from None


def _halves(expr: str) -> list[str]:
    """The cronsim expressions whose union is ``expr`` (a Kubernetes schedule), or
    ScheduleError."""
    text = expr.strip()
    upper = text.upper()
    if upper.startswith(("TZ=", "CRON_TZ=")):
        raise ScheduleError("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    if text.startswith("@"):
        if text.lower().startswith("@every"):
            raise ScheduleError("@every is not supported (use a five-field schedule)")
        macro = MACROS.get(text.lower())
        if macro is None:
            raise ScheduleError(f"unrecognized descriptor: {text} (known: {', '.join(MACROS)})")
        upper = macro
    fields = upper.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: {expr}")
    for i, value in enumerate(fields):
        if not _FIELD_SYNTAX.fullmatch(value):
            raise ScheduleError(f"bad {_FIELDS[i]}: {value!r}")
        for word in re.findall(r"[A-Z]+", value):
            if word not in _NAMES.get(i, ()):
                raise ScheduleError(f"bad {_FIELDS[i]}: {value!r} ({word} is not a value here)")
    # robfig: "?" is "*"; a day field is unrestricted when one of its parts is "*" (or
    # "*/1"), and then it holds every day anyway.
    fields = [f.replace("?", "*") for f in fields]
    free = [any(p in ("*", "*/1") for p in fields[i].split(",")) for i in (2, 4)]
    fields[2], fields[4] = ("*" if free[0] else fields[2]), ("*" if free[1] else fields[4])
    if not any(free) and (fields[2].startswith("*") or fields[4].startswith("*")):
        # Both restricted for robfig (a step on * restricts), not for cronsim: OR them.
        return [" ".join([*fields[:4], "*"]), " ".join([*fields[:2], "*", *fields[3:]])]
    return [" ".join(fields)]


class Schedule:
    """A Kubernetes cron schedule read in a time zone: the times it fires at, as aware UTC
    datetimes."""

    def __init__(self, expr: str, time_zone: str | None = None) -> None:
        self.expr = expr
        self.zone = zone(time_zone)
        self._parts = _halves(expr)
        start = datetime(2000, 1, 1, tzinfo=self.zone)
        for part in self._parts:
            try:
                CronSim(part, start)
            except CronSimError as exc:
                raise ScheduleError(str(exc).lower().replace("-", " ")) from None

    def next_after(self, moment: datetime) -> datetime:
        """The first time strictly after ``moment``."""
        local = moment.astimezone(self.zone)
        return min(next(CronSim(part, local)) for part in self._parts).astimezone(UTC)

    def latest_until(self, moment: datetime) -> datetime:
        """The last time at or before ``moment``."""
        # cronsim's reverse iteration yields times strictly before its start, to the second.
        local = (moment.replace(microsecond=0) + timedelta(seconds=1)).astimezone(self.zone)
        return max(next(CronSim(part, local, reverse=True)) for part in self._parts).astimezone(UTC)


def schedule_error(expr: str, time_zone: str | None = None) -> str | None:
    """Why ``expr`` is not a schedule Kubernetes accepts (None when it is)."""
    try:
        Schedule(expr, time_zone)
    except ScheduleError as exc:
        return str(exc)
    return None


def rfc3339(moment: datetime) -> str:
    """``moment`` as Go's ``time.RFC3339`` writes it: seconds, ``Z`` for a zero offset."""
    offset = moment.utcoffset() or timedelta()
    text = moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S")
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"

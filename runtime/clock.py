"""Does the box's clock look right?

A box without a real-time clock (a Raspberry Pi has none) boots at 1970 or wherever its last
shutdown left it, until it meets a network, and a field box may never meet one. Every stored time,
every export's `since`, and the date printed on a referral slip would then be wrong. The box cannot
know the true time, but it knows two moments that have certainly passed: when its model was made
(the manifest's created_utc) and the newest record in its own store. A clock earlier than either is
wrong, and the operator is told before screening.

    warning = clock_warning(datetime.now(timezone.utc), model_created=manifest.created_utc,
                            newest_record=newest_record(store))   # None, or what to say
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

# A record a few minutes "in the future" is a clock adjusted by hand, not a box living in another year.
TOLERANCE = timedelta(minutes=5)
_RECORD_TABLES = ("sessions", "results", "recordings", "device_events")


def _parse(moment: str | None) -> datetime | None:
    if not moment:
        return None
    try:
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def newest_record(store) -> str | None:
    """The latest created_at among the store's visits, results, recordings and device events."""
    if store is None:
        return None
    times = [row[0] for table in _RECORD_TABLES for row in store.query(f"SELECT MAX(created_at) FROM {table}") if row[0]]
    return max(times, key=_parse) if times else None


def clock_warning(now: datetime, *, model_created: str | None, newest_record: str | None) -> dict | None:
    """None when the clock is not earlier than anything known to have passed; otherwise
    {"code": "before_model" | "before_records", "now", "not_before"} (ISO 8601, UTC) and "message",
    an English sentence for the terminal (the kiosk words it from its catalogue by code)."""
    now = now.astimezone(timezone.utc)
    for code, moment in (("before_records", _parse(newest_record)), ("before_model", _parse(model_created))):
        if moment is not None and now < moment - TOLERANCE:
            what = "the newest record in this box's store" if code == "before_records" else "the model was made"
            return {"code": code, "now": now.isoformat(timespec="seconds"), "not_before": moment.isoformat(timespec="seconds"),
                    "message": f"the box's clock reads {now:%Y-%m-%d %H:%M} UTC, earlier than {what} "
                               f"({moment:%Y-%m-%d %H:%M} UTC): set the date and time before screening, or every "
                               "stored time and the date on the referral slip will be wrong"}
    return None

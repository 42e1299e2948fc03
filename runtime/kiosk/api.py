"""What the kiosk's HTTP API accepts: each request body checked field by field before anything runs.

Every problem is reported per field as {"code": ..., "message": ...} (plus the limits where there
are some), so the app can show it beside the field, translated by `code`. Validation is complete
before any call into the runtime: a refused request stores nothing.
"""

from __future__ import annotations

import math

from runtime.metadata import (
    AGE_GROUP_RANGES,
    HEIGHT_RANGE_CM,
    PREGNANCY_AGE_GROUPS,
    WEIGHT_RANGE_KG,
    check_demographics,
)
from runtime.records import AGE_GROUPS, SEXES, Demographics
from runtime.sites import GUIDED_SITES

PATIENT_FIELDS = ("consent", "consent_reuse", "age_group", "sex", "height_cm", "weight_kg", "pregnant")
MAX_SECONDS_PER_SITE = 120.0
EXPORT_FORMATS = ("csv", "json")


class FieldErrors(ValueError):
    """A request refused because of its content; `errors` maps each field to what was wrong with it."""

    def __init__(self, errors: dict[str, dict], status: int = 422):
        super().__init__("; ".join(f"{name}: {e['message']}" for name, e in errors.items()))
        self.errors = errors
        self.status = status


def field_error(code: str, message: str, **limits) -> dict:
    return {"code": code, "message": message, **limits}


def require_object(body: object) -> dict:
    if not isinstance(body, dict):
        raise FieldErrors({"body": field_error("not_object", "the request body must be a JSON object")}, status=400)
    return body


def unknown_fields(body: dict, allowed: tuple[str, ...]) -> dict[str, dict]:
    return {
        name: field_error("unknown_field", f"unknown field; expected only {', '.join(allowed)}")
        for name in body if name not in allowed
    }


def _choice(body: dict, name: str, choices: tuple[str, ...], errors: dict) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if value not in choices:
        errors[name] = field_error("choice", f"{value!r} is not one of {', '.join(choices)}; leave it empty if unknown",
                                   choices=list(choices))
        return None
    return value


def _measure(body: dict, name: str, bounds: tuple[float, float], unit: str, errors: dict) -> float | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors[name] = field_error("number", f"must be a number in {unit}, or empty if unknown")
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        number = math.inf
    if not math.isfinite(number) or not low <= number <= high:
        shown = f"{number:g}" if math.isfinite(number) else "a number this large"
        errors[name] = field_error("range", f"{shown} {unit} is outside the plausible range {low:g} to {high:g} {unit}",
                                   min=low, max=high, unit=unit)
        return None
    return number


def parse_patient(body: object) -> tuple[Demographics, bool]:
    """(demographics, consent_reuse) of a new patient from a request body; raises FieldErrors.

    Consent must be `true`; consent_reuse (the separate consent to reuse the recordings for
    retraining) may be true or false, absent or null meaning not given; every demographic field
    may be absent, null or "" for unknown.
    """
    body = require_object(body)
    errors = unknown_fields(body, PATIENT_FIELDS)
    if body.get("consent") is not True:
        errors["consent"] = field_error(
            "consent_required", "the guardian's consent is required before anything is recorded or stored")
    consent_reuse = body.get("consent_reuse")
    if not (consent_reuse is None or isinstance(consent_reuse, bool)):  # 1 and 0 are not a yes or no
        errors["consent_reuse"] = field_error("boolean", "must be true or false (leave it out when not given)")
    age_group = _choice(body, "age_group", AGE_GROUPS, errors)
    sex = _choice(body, "sex", SEXES, errors)
    height = _measure(body, "height_cm", HEIGHT_RANGE_CM, "cm", errors)
    weight = _measure(body, "weight_kg", WEIGHT_RANGE_KG, "kg", errors)
    if age_group in AGE_GROUP_RANGES:
        for name, value, (low, high), unit in (("height_cm", height, AGE_GROUP_RANGES[age_group][0], "cm"),
                                              ("weight_kg", weight, AGE_GROUP_RANGES[age_group][1], "kg")):
            if value is not None and not low <= value <= high:
                errors[name] = field_error(
                    "age_range", f"{value:g} {unit} is implausible for age group {age_group} (expected {low:g} to "
                    f"{high:g} {unit}); check the age group and this value", min=low, max=high, unit=unit)
    pregnant = body.get("pregnant")
    if pregnant not in (None, True, False):
        errors["pregnant"] = field_error("boolean", "must be true, false, or empty if unknown")
        pregnant = None
    elif pregnant and sex == "Male":
        errors["pregnant"] = field_error("implausible", "pregnancy recorded for a male patient")
    elif pregnant and age_group is not None and age_group not in PREGNANCY_AGE_GROUPS:
        errors["pregnant"] = field_error(
            "implausible", f"pregnancy recorded for age group {age_group}; plausible only for "
            f"{' or '.join(PREGNANCY_AGE_GROUPS)}")
    if errors:
        raise FieldErrors(errors)
    demographics = Demographics(age_group=age_group, sex=sex, height_cm=height, weight_kg=weight, pregnant=pregnant)
    problems = check_demographics(demographics)
    if problems:  # the field checks above mirror check_demographics; this keeps them honest
        raise FieldErrors({"demographics": field_error("implausible", "; ".join(problems))})
    return demographics, consent_reuse is True


def parse_recording(body: object, default_seconds: float | None) -> tuple[str, float | None]:
    """(site, seconds) for a recording request: {"site": "AV", "seconds": 10 (optional)}."""
    body = require_object(body)
    errors = unknown_fields(body, ("site", "seconds"))
    site = body.get("site")
    if site not in GUIDED_SITES:
        errors["site"] = field_error("choice", f"{site!r} is not one of {', '.join(GUIDED_SITES)}",
                                     choices=list(GUIDED_SITES))
    seconds = body.get("seconds", default_seconds)
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, (int, float))
        or not 0 < seconds <= MAX_SECONDS_PER_SITE  # compares exactly, even for an integer of hundreds of digits
        or not math.isfinite(seconds)
    ):
        errors["seconds"] = field_error("range", f"must be a number of seconds above 0 and at most "
                                        f"{MAX_SECONDS_PER_SITE:g}", min=0, max=MAX_SECONDS_PER_SITE)
    if errors:
        raise FieldErrors(errors)
    return site, None if seconds is None else float(seconds)


def parse_export(query: dict[str, list[str]]) -> tuple[str, int | None]:
    """(format, after_seq) from an export URL's query: ?format=csv|json&after_seq=N."""
    errors = unknown_fields(query, ("format", "after_seq"))
    formats = query.get("format", ["csv"])
    if len(formats) != 1 or formats[0] not in EXPORT_FORMATS:
        errors["format"] = field_error("choice", f"must be one of {', '.join(EXPORT_FORMATS)}",
                                       choices=list(EXPORT_FORMATS))
    after_seq = None
    if "after_seq" in query:
        text = query["after_seq"]
        if len(text) != 1 or not (text[0].isascii() and text[0].isdigit()) or len(text[0]) > 18:
            errors["after_seq"] = field_error(
                "number", "must be a whole number from 0 to 999999999999999999 (the max_seq of an earlier export)")
        else:
            after_seq = int(text[0])
    if errors:
        raise FieldErrors(errors)
    return formats[0], after_seq

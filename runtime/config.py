"""The box's own configuration: which programmes' models it trusts.

    {
      "trusted_keys": ["ed25519:<base64>", ...],   # public keys (pcg-export keygen's .pub lines)
      "allow_unsigned_models": false,              # true: screen with unsigned/untrusted models, saying so
      "operating_point": "cost_optimal_prevalence_5",  # or {"target_sensitivity": 0.9}; default: the model's
      "referral": {"place": "Ambulatório de Cardiologia Pediátrica, Hospital X",   # where a REFER goes
                   "within_days": 30,                          # optional: how soon (1 to 365 days)
                   "note": "Agende pelo telefone (11) 5555-0000"}   # optional: shown as written
    }

The operating point is the programme's choice: a point the model's manifest names (its
cross-validated sensitivity and specificity are printed by `pcg-runtime model`), or the highest
threshold whose out-of-fold sensitivity reaches a target (the manifest's operating_curve). The
command line's --operating-point wins over it.

The referral is the site's own: where the kiosk tells the health worker to refer a child, and how
soon. Without it the kiosk says "a paediatric cardiologist or the reference clinic" and tells the
supervisor that it can be set here.

Found at `--config FILE`, else $PCG_SCREEN_CONFIG, else /etc/pcg-screen/box.json; with none, the
box trusts only the bundled model (its hash is pinned in the package). The file decides which
models may make decisions, so it must not be writable by anyone but its owner: a file that is
group- or world-writable is refused, as ssh refuses such key files.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from runtime.signing import SignatureError, key_id, parse_public_key

DEFAULT_CONFIG = Path("/etc/pcg-screen/box.json")
CONFIG_KEYS = ("trusted_keys", "allow_unsigned_models", "operating_point", "referral")
REFERRAL_KEYS = ("place", "within_days", "note")
MAX_REFERRAL_TEXT = 200  # characters of place and note: a line or two on the result screen and the slip


class ConfigError(ValueError):
    """The box configuration cannot be used; the message says why and where."""


@dataclass(frozen=True)
class BoxConfig:
    trusted_keys: tuple[str, ...] = ()  # "ed25519:..." as written
    allow_unsigned_models: bool = False
    path: Path | None = None  # where it was read from; None: no file, the defaults
    key_ids: frozenset[str] = field(default_factory=frozenset)
    operating_point: str | dict | None = None  # a manifest's point name, or {"target_sensitivity": x}
    referral: dict | None = None  # {"place": str, "within_days": int (optional), "note": str (optional)}

    @property
    def where(self) -> str:
        return str(self.path) if self.path else f"{DEFAULT_CONFIG} (absent), or $PCG_SCREEN_CONFIG"


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The configuration file to read: `explicit`, $PCG_SCREEN_CONFIG, or the default when it exists."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("PCG_SCREEN_CONFIG"):
        return Path(os.environ["PCG_SCREEN_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load_box_config(explicit: str | Path | None = None) -> BoxConfig:
    """The box configuration (defaults when there is no file); ConfigError with the reason otherwise."""
    path = config_path(explicit)
    if path is None:
        return BoxConfig()
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"box configuration {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"box configuration {path}: not a UTF-8 text file") from None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"box configuration {path} can be changed by other users (mode {stat.S_IMODE(info.st_mode):o}): "
                          f"it decides which models are trusted; make it writable by its owner only (chmod 644 {path})")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise ConfigError(f"box configuration {path}: not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"box configuration {path}: expected a JSON object with {', '.join(CONFIG_KEYS)}")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"box configuration {path}: unknown keys {unknown}; allowed: {', '.join(CONFIG_KEYS)}")
    keys = data.get("trusted_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"box configuration {path}: trusted_keys must be a list of 'ed25519:...' strings")
    try:
        ids = frozenset(key_id(parse_public_key(k)) for k in keys)
    except SignatureError as exc:
        raise ConfigError(f"box configuration {path}: trusted_keys: {exc}") from None
    allow = data.get("allow_unsigned_models", False)
    if not isinstance(allow, bool):
        raise ConfigError(f"box configuration {path}: allow_unsigned_models must be true or false")
    point = data.get("operating_point")
    if point is not None and not isinstance(point, str):
        target = point.get("target_sensitivity") if isinstance(point, dict) and set(point) == {"target_sensitivity"} else None
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.5 <= target <= 0.99:
            raise ConfigError(f"box configuration {path}: operating_point must be a name the model's manifest gives, or "
                              '{"target_sensitivity": x} with x from 0.5 to 0.99')
    return BoxConfig(tuple(keys), allow, path, ids, point, parse_referral(data.get("referral"), path))


def parse_referral(value, path: Path) -> dict | None:
    """The configuration's "referral" checked: None when absent, else place (required), within_days and
    note (optional) with only the keys given."""
    if value is None:
        return None
    example = '{"place": "Ambulatório de Cardiologia Pediátrica", "within_days": 30, "note": "..."}'
    if not isinstance(value, dict):
        raise ConfigError(f"box configuration {path}: referral must be an object such as {example}")
    unknown = sorted(set(value) - set(REFERRAL_KEYS))
    if unknown:
        raise ConfigError(f"box configuration {path}: referral has unknown keys {unknown}; allowed: {', '.join(REFERRAL_KEYS)}")
    purposes = {"place": "where the health worker sends the child", "note": "shown as written under the referral"}
    for name, purpose in purposes.items():
        text = value.get(name)
        if (name == "place" or text is not None) and (
                not isinstance(text, str) or not text.strip() or len(text) > MAX_REFERRAL_TEXT or not text.isprintable()):
            raise ConfigError(f"box configuration {path}: referral.{name} must be text of 1 to {MAX_REFERRAL_TEXT} "
                              f"characters on one line ({purpose}); got {text!r:.80}")
    days = value.get("within_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365):
        raise ConfigError(f"box configuration {path}: referral.within_days must be a whole number of days from 1 to 365; "
                          f"got {days!r:.40}")
    return {"place": value["place"].strip(), "within_days": days,
            "note": value["note"].strip() if value.get("note") is not None else None}


def programme_point(manifest, wanted: str | dict):
    """The manifest with the programme's operating point: (manifest, name). A name must be one of the
    manifest's; {"target_sensitivity": x} becomes a point "programme" at the highest threshold whose
    out-of-fold sensitivity reaches x. ConfigError when the model cannot honour it."""
    import dataclasses

    from runtime.manifest import OperatingPoint

    if isinstance(wanted, str):
        if wanted not in manifest.operating_points:
            raise ConfigError(f"the box configuration asks for operating point {wanted!r}, which this model does not "
                              f"have: it has {', '.join(manifest.operating_points)}")
        return manifest, wanted
    target = float(wanted["target_sensitivity"])
    curve = manifest.metrics.get("operating_curve") if isinstance(manifest.metrics, dict) else None
    if not curve:
        raise ConfigError("the box configuration asks for a target sensitivity, but this model's manifest has no "
                          "operating curve (export it again with this release)")
    point = min((c for c in curve if c["sensitivity"] >= target), key=lambda c: -c["threshold"], default=None)
    if point is None:
        raise ConfigError(f"no threshold of this model reaches sensitivity {target:g} on its out-of-fold predictions")
    chosen = OperatingPoint(threshold=point["threshold"], sensitivity=point["sensitivity"], specificity=point["specificity"],
                            description=f"the programme's choice (box configuration): out-of-fold sensitivity >= {target:g}")
    points = {**manifest.operating_points, "programme": chosen}
    return dataclasses.replace(manifest, operating_points=points), "programme"

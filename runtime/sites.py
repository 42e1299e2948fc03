"""Auscultation sites and the one fixed order every patient tensor uses (DESIGN.md contract 2)."""

from __future__ import annotations

#: Patient tensor slot order. "Phc" is CirCor's "other" location; PhysioNet 2016 recordings,
#: whose site is not recorded, and plain WAV files of unknown site also go in that last slot.
SITES: tuple[str, ...] = ("AV", "PV", "TV", "MV", "Phc")
#: The four standard sites an operator is guided through, in order.
GUIDED_SITES: tuple[str, ...] = SITES[:4]
OTHER_SITE = "Phc"

SITE_NAMES = {
    "AV": "aortic valve",
    "PV": "pulmonic valve",
    "TV": "tricuspid valve",
    "MV": "mitral valve",
    "Phc": "other or unknown location",
}


def site_index(site: str) -> int:
    """Slot of `site` in SITES; raises ValueError naming the valid sites."""
    try:
        return SITES.index(site)
    except ValueError:
        raise ValueError(f"unknown auscultation site {site!r}; expected one of {', '.join(SITES)}") from None

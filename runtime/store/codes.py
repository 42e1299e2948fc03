"""Patient codes: what the health worker writes on the card instead of a name, e.g. 'PCG-7K3M-9Q'.

Five random characters and one check character from a 29-symbol alphabet without look-alikes
(no 0/O, 1/I/L, U, Z). The check makes the weighted sum of all six symbols (weights 1..6) a
multiple of 29; 29 is prime, so any single mistyped character and any swap of two characters
is detected. 29**5 (about 20 million) codes; uniqueness within a store is enforced by the database.
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXY"
PREFIX = "PCG"
_BASE = len(ALPHABET)  # 29, prime
_RANDOM_CHARS = 5


def _check_symbol(body: str) -> str:
    partial = sum((i + 1) * ALPHABET.index(c) for i, c in enumerate(body))
    weight = len(body) + 1
    return ALPHABET[(-partial * pow(weight, -1, _BASE)) % _BASE]


def new_patient_code() -> str:
    """A fresh random code with its check character: 'PCG-XXXX-XC'."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(_RANDOM_CHARS))
    return _format(body + _check_symbol(body))


def _format(symbols: str) -> str:
    return f"{PREFIX}-{symbols[:4]}-{symbols[4:]}"


def normalize_patient_code(text: str) -> str:
    """The canonical form of a typed code (case, spaces and dashes forgiven); ValueError if invalid."""
    symbols = "".join(text.upper().split()).replace("-", "")
    if symbols.startswith(PREFIX):
        symbols = symbols[len(PREFIX) :]
    if len(symbols) != _RANDOM_CHARS + 1 or any(c not in ALPHABET for c in symbols):
        raise ValueError(
            f"patient code {text!r} is not in the form {PREFIX}-XXXX-XX with characters from {ALPHABET}; "
            "check the card and type it again"
        )
    if _check_symbol(symbols[:-1]) != symbols[-1]:
        raise ValueError(f"patient code {text!r} fails its check character (a character is mistyped); "
                         "check the card and type it again")
    return _format(symbols)

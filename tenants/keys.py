"""API key format and hashing.

A key is ``sy-`` + an 8-character prefix + ``_`` + a 40-character secret, all URL-safe. The
prefix is stored in clear to tell keys apart; the whole key is stored only as its SHA-256
hex digest. Keys carry ~240 bits of randomness, so a fast unsalted hash is the right tool
(as for GitHub's tokens): lookup is one indexed equality query.
"""

from __future__ import annotations

import hashlib
import secrets
import string

KEY_PREFIX = "sy-"
_ALPHABET = string.ascii_letters + string.digits
PREFIX_LEN = 8
SECRET_LEN = 40


def generate_key() -> tuple[str, str]:
    """A new (key, prefix) pair."""
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LEN))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LEN))
    return f"{KEY_PREFIX}{prefix}_{secret}", prefix


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def looks_like_key(raw: str) -> bool:
    """Cheap shape check, so garbage never reaches the database."""
    if not raw.startswith(KEY_PREFIX):
        return False
    body = raw[len(KEY_PREFIX) :]
    return (
        len(body) == PREFIX_LEN + 1 + SECRET_LEN
        and body[PREFIX_LEN] == "_"
        and all(c in _ALPHABET for c in body[:PREFIX_LEN] + body[PREFIX_LEN + 1 :])
    )

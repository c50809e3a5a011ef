"""Encryption of provider secrets (upstream API keys) at rest, with Fernet.

The key comes from ``SWITCHYARD_ENCRYPTION_KEY`` (a Fernet key) or, failing that, is derived
from SECRET_KEY with HKDF, so rotating SECRET_KEY without setting the former makes stored
upstream keys unreadable (they must be entered again), never readable by the wrong party.
"""

from __future__ import annotations

import base64
import os
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


@cache
def _fernet() -> Fernet:
    explicit = os.environ.get("SWITCHYARD_ENCRYPTION_KEY")
    if explicit:
        return Fernet(explicit.encode())
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"switchyard-secrets", info=b"upstream-keys"
    ).derive(settings.SECRET_KEY.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt(token: str) -> str:
    """The secret, or "" when none is stored. Raises ValueError if it cannot be decrypted."""
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("stored upstream key cannot be decrypted with the current key") from exc

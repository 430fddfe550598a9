"""Encryption of secrets at rest with cryptography's Fernet.

The key is ``PANEL_ENCRYPTION_KEY`` (a Fernet key) or, when unset, derived from
``PANEL_SECRET_KEY`` with HKDF-SHA256, so changing the secret key makes stored secrets unreadable:
set ``PANEL_ENCRYPTION_KEY`` explicitly in production.

cryptography is imported on the first encryption or decryption, not with this module: a web
worker that never handles a secret does not carry it (about 7 MB of RSS, issue 14).
"""
from __future__ import annotations

import base64
import json

from flask import current_app


class SecretDecryptError(RuntimeError):
    """A stored secret could not be decrypted (wrong or changed key). Never carries the value."""


def _fernet(config=None):
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    cfg = config if config is not None else current_app.config
    key = cfg.get("ENCRYPTION_KEY")
    if key:
        return Fernet(str(key).encode())
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"hostpanel-secrets-v1",
                   info=b"fernet").derive(str(cfg["SECRET_KEY"]).encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(value: str) -> str:
    """Encrypt a string; returns a Fernet token (ASCII)."""
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt a Fernet token; raises ``SecretDecryptError`` if the key does not match."""
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        raise SecretDecryptError("a stored secret cannot be decrypted: was PANEL_ENCRYPTION_KEY "
                                 "or PANEL_SECRET_KEY changed?") from None


def is_fernet_key(key: str) -> bool:
    """Whether ``key`` is a Fernet key: 32 bytes in URL-safe base64 (the check
    ``cryptography.fernet.Fernet(key)`` makes, without importing cryptography)."""
    import binascii

    try:
        return len(base64.urlsafe_b64decode(str(key).encode())) == 32
    except (binascii.Error, ValueError):
        return False


def encrypt_json(values: dict) -> str | None:
    """Encrypt a JSON mapping of secrets; ``None`` for an empty mapping."""
    return encrypt(json.dumps(values)) if values else None


def decrypt_json(token: str | None) -> dict:
    """The mapping stored by ``encrypt_json`` (``{}`` for ``None``)."""
    return json.loads(decrypt(token)) if token else {}

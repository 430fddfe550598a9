"""Signed links sent by email (itsdangerous): password reset, email verification, email change.

Each token is a ``URLSafeTimedSerializer`` dump of a small mapping, salted per purpose, and
expires (``PANEL_RESET_TOKEN_MINUTES``, default 60, for resets; ``PANEL_EMAIL_TOKEN_HOURS``,
default 48, for the two email links). Single use comes from what the token binds to: a reset
token carries a fingerprint of the current password hash (it stops working once the password
changed), an email-change token the current address (it stops working once the address changed).
"""
from __future__ import annotations

import hashlib

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from panel.extensions import db
from panel.models import User

RESET, VERIFY, CHANGE_EMAIL = "password-reset", "email-verify", "email-change"


class TokenError(ValueError):
    """A link that is invalid, expired or already used; ``str()`` is a message for the customer."""


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=f"hostpanel-{purpose}")


def _fingerprint(user: User) -> str:
    return hashlib.sha256(f"{user.id}:{user.password_hash}:{user.email}".encode()).hexdigest()[:20]


def _max_age(purpose: str) -> int:
    if purpose == RESET:
        return int(current_app.config["RESET_TOKEN_MINUTES"]) * 60
    return int(current_app.config["EMAIL_TOKEN_HOURS"]) * 3600


def make(purpose: str, user: User, **extra) -> str:
    """A signed token for ``user`` and ``purpose`` (``RESET``, ``VERIFY``, ``CHANGE_EMAIL``)."""
    payload = {"u": user.id, "f": _fingerprint(user) if purpose == RESET else user.email, **extra}
    return _serializer(purpose).dumps(payload)


def load(purpose: str, token: str) -> tuple[User, dict]:
    """The user and payload of a valid token; raises ``TokenError`` (expired, tampered, used)."""
    try:
        payload = _serializer(purpose).loads(token, max_age=_max_age(purpose))
    except SignatureExpired:
        raise TokenError("This link has expired. Ask for a new one.") from None
    except BadSignature:
        raise TokenError("This link is not valid. Check that you copied all of it, or ask for a new one.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("u"), int):
        raise TokenError("This link is not valid.")
    user = db.session.get(User, payload["u"])
    bound = (_fingerprint(user) if purpose == RESET else user.email) if user is not None else None
    if user is None or payload.get("f") != bound:
        raise TokenError("This link was already used or is no longer valid. Ask for a new one.")
    return user, payload

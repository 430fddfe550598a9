"""TOTP two-factor authentication (RFC 6238, pyotp) with single-use recovery codes.

The base32 secret is stored Fernet-encrypted (``panel.crypto``); codes are accepted one step
(30 s) either side of now and never twice (``users.totp_last_step``). Ten recovery codes are
shown once; only their SHA-256 is kept and each works once.
"""
from __future__ import annotations

import hashlib
import secrets
import time

import pyotp

from panel import crypto
from panel.models import User
from panel.models.base import utcnow

ISSUER = "hostpanel"
RECOVERY_CODES = 10


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, email: str) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app scans (as a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """An inline SVG QR code of ``uri`` (segno; no script, no style attribute)."""
    import io

    import segno

    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, border=2, xmldecl=False, svgns=True,
                                    title="QR code for your authenticator app")
    return out.getvalue().decode()


def _clean(code: str) -> str:
    return "".join(ch for ch in (code or "") if ch.isalnum()).lower()


def verify_code(secret: str, code: str, last_step: int | None = None) -> int | None:
    """The time step ``code`` matches (now ±1 step), or ``None``; a step at or before
    ``last_step`` is refused (no replay)."""
    digits = _clean(code)
    if len(digits) != 6 or not digits.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now = int(time.time()) // totp.interval
    for step in (now - 1, now, now + 1):
        if last_step is not None and step <= last_step:
            continue
        if secrets.compare_digest(totp.generate_otp(step), digits):
            return step
    return None


def _hash_code(code: str) -> str:
    return hashlib.sha256(_clean(code).encode()).hexdigest()


def new_recovery_codes(user: User) -> list[str]:
    """Replace ``user``'s recovery codes with ten new ones; returns them in plain (show once)."""
    codes = [f"{secrets.token_hex(3)}-{secrets.token_hex(3)}" for _ in range(RECOVERY_CODES)]
    user.recovery_codes = [_hash_code(c) for c in codes]
    return codes


def enable(user: User, secret: str, step: int) -> list[str]:
    """Turn 2FA on with a confirmed ``secret``; returns the new recovery codes. Not committed."""
    user.totp_secret = crypto.encrypt(secret)
    user.totp_enabled_at = utcnow()
    user.totp_last_step = step
    return new_recovery_codes(user)


def disable(user: User) -> None:
    """Turn 2FA off and drop the recovery codes. Not committed."""
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    user.recovery_codes = None


def check(user: User, code: str) -> str | None:
    """Check a sign-in code: ``"totp"`` or ``"recovery"`` (that code is used up), or ``None``.
    Updates ``user`` (not committed)."""
    if not user.has_2fa:
        return None
    step = verify_code(crypto.decrypt(user.totp_secret), code, user.totp_last_step)
    if step is not None:
        user.totp_last_step = step
        return "totp"
    hashed = _hash_code(code)
    remaining = list(user.recovery_codes or [])
    if _clean(code) and hashed in remaining:
        remaining.remove(hashed)
        user.recovery_codes = remaining
        return "recovery"
    return None

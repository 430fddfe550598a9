"""Users (customers and operators) and their personal API tokens."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask_login import UserMixin
from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from panel.extensions import db
from panel.models.base import JSONType, utcnow

_hasher = PasswordHasher()
# Verified for unknown emails at login, so an unknown address costs as long as a known one.
_DUMMY_HASH = _hasher.hash("hostpanel-dummy-password-for-timing")

ROLES = ("customer", "operator")
MIN_PASSWORD_LENGTH = 8  # the one password rule: sign-up, password change and `panel users create`


class InvalidEmail(ValueError):
    """An address the panel does not accept; ``str()`` is a message for the person who typed it."""


def validate_email(email: str) -> str:
    """The one email rule (sign-up, login, email change, ``panel users create``): a syntactically
    valid address whose domain is not a special-use one (``.test``, ``.local``, ``.invalid``, ...;
    email-validator's rules, no DNS lookup). Returns it normalised (lower-cased); raises
    ``InvalidEmail``."""
    import email_validator

    try:
        result = email_validator.validate_email((email or "").strip(), check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
    return result.normalized.lower()


class User(UserMixin, db.Model):
    """A panel account. ``role`` is ``customer`` or ``operator``; passwords are Argon2id hashes."""

    __tablename__ = "users"
    # the operator's search looks emails up by prefix (LIKE 'q%'): on PostgreSQL in a database whose
    # collation is not C only a pattern_ops index serves that
    __table_args__ = (Index("ix_users_email_prefix", "email", postgresql_ops={"email": "varchar_pattern_ops"}),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="customer")
    is_active_flag: Mapped[bool] = mapped_column("is_active", default=True)
    # the language the user chose (panel.i18n.LANGUAGES); None: the browser's
    locale: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    email_verified_at = mapped_column(DateTime(timezone=True), nullable=True)
    # TOTP (RFC 6238) two-factor authentication: the base32 secret, Fernet-encrypted at rest;
    # enabled once the first code was confirmed; the last accepted time step (no replay).
    totp_secret: Mapped[str | None] = mapped_column(String(255), nullable=True)
    totp_enabled_at = mapped_column(DateTime(timezone=True), nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # SHA-256 hex of each unused recovery code (a code is removed when used).
    recovery_codes: Mapped[list | None] = mapped_column(JSONType, nullable=True)

    tokens = relationship("ApiToken", back_populates="user", cascade="all, delete-orphan")
    sessions = relationship("UserSession", back_populates="user", cascade="all, delete-orphan")
    profile = relationship("Profile", back_populates="user", uselist=False, cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email} {self.role}>"

    @staticmethod
    def normalize_email(email: str) -> str:
        """Lower-cased, stripped email."""
        return (email or "").strip().lower()

    @classmethod
    def by_email(cls, email: str) -> "User | None":
        """The user with this email (any case) or ``None``."""
        return db.session.scalar(db.select(cls).where(cls.email == cls.normalize_email(email)))

    def set_password(self, password: str) -> None:
        """Store an Argon2id hash of ``password``."""
        self.password_hash = _hasher.hash(password)

    @staticmethod
    def burn_password_check(password: str) -> None:
        """Verify ``password`` against a dummy Argon2 hash: the same cost as ``check_password``, for
        logins with an unknown email (no account probing by timing)."""
        try:
            _hasher.verify(_DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            pass

    @property
    def has_2fa(self) -> bool:
        """Whether TOTP two-factor authentication is on."""
        return self.totp_enabled_at is not None and bool(self.totp_secret)

    @property
    def email_verified(self) -> bool:
        """Whether the address was confirmed through the emailed link."""
        return self.email_verified_at is not None

    def check_password(self, password: str) -> bool:
        """Whether ``password`` matches (rehashes when parameters changed)."""
        try:
            ok = _hasher.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        if ok and _hasher.check_needs_rehash(self.password_hash):
            self.set_password(password)
        return ok

    @property
    def is_active(self) -> bool:  # Flask-Login
        """Flask-Login: a disabled account cannot log in."""
        return bool(self.is_active_flag)

    @property
    def is_operator(self) -> bool:
        """The operator role."""
        return self.role == "operator"


class ApiToken(db.Model):
    """A personal bearer token for the JSON API. Only a SHA-256 of the token is stored.

    Tokens look like ``hp_<prefix>_<secret>``; ``prefix`` (8 chars) identifies it in listings.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at = mapped_column(DateTime(timezone=True), nullable=True)

    user = relationship("User", back_populates="tokens")

    @staticmethod
    def hash(token: str) -> str:
        """SHA-256 hex of a plain token."""
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(cls, user: User, name: str = "") -> tuple["ApiToken", str]:
        """Create a token for ``user``; returns (row, plain token). The plain token is shown once."""
        prefix = secrets.token_hex(4)
        plain = f"hp_{prefix}_{secrets.token_urlsafe(32)}"
        row = cls(user=user, name=name, prefix=prefix, token_hash=cls.hash(plain))
        db.session.add(row)
        return row, plain

    @classmethod
    def authenticate(cls, plain: str) -> User | None:
        """The user owning ``plain`` (check ``is_active``), or ``None``. Updates ``last_used_at``."""
        from sqlalchemy.orm import joinedload

        # the owner in the same statement: every API request needs it (issue 14)
        row = db.session.scalar(db.select(cls).where(cls.token_hash == cls.hash(plain or ""))
                                .options(joinedload(cls.user, innerjoin=True)))
        if row is None:
            return None
        last = row.last_used_at
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=timezone.utc)
        if last is None or utcnow() - last > timedelta(minutes=1):  # not a write per request
            row.last_used_at = utcnow()
        return row.user


class UserSession(db.Model):
    """A signed-in browser session (server side), so sessions can be listed and revoked.

    The session cookie carries a random token; only its SHA-256 is stored. Logging out deletes
    the row; a password change deletes the account's other rows; disabling the account and "log
    out everywhere" delete them all. A cookie whose row is gone is logged out.
    """

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at = mapped_column(DateTime(timezone=True), default=utcnow)
    ip_address: Mapped[str] = mapped_column(String(45), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")

    user = relationship("User", back_populates="sessions")


def sa_true():
    """The server default ``true`` on every database."""
    from sqlalchemy import true

    return true()


class Profile(db.Model):
    """A customer's name, contact details, billing address and tax ID (one row per user).

    Billing passes these to Stripe (customer name, address, tax ID) and prints them on invoices.
    ``country`` is an ISO 3166-1 alpha-2 code (``CH``); ``tax_id`` is stored as typed, validated
    with python-stdnum's VAT rules for the country where it has them.
    """

    __tablename__ = "profiles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    company: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    address_line1: Mapped[str] = mapped_column(String(200), default="")
    address_line2: Mapped[str] = mapped_column(String(200), default="")
    postal_code: Mapped[str] = mapped_column(String(20), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    region: Mapped[str] = mapped_column(String(100), default="")
    country: Mapped[str] = mapped_column(String(2), default="")
    tax_id: Mapped[str] = mapped_column(String(40), default="")
    # seed 002's org_billing_config, set by operators: our own monthly invoice is issued on its own
    # (``auto_invoice``) and overdue ones are reminded (``auto_reminders``)
    auto_invoice: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    auto_reminders: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    # the customer's own switch (on /billing): payment reminders are e-mailed; off, they are still
    # recorded and the dunning after the last one still follows, only no e-mail is sent
    reminder_emails: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    user = relationship("User", back_populates="profile")

    FIELDS = ("full_name", "company", "phone", "address_line1", "address_line2", "postal_code", "city",
              "region", "country", "tax_id")

    def to_json(self) -> dict:
        """The profile as a plain mapping (the ``FIELDS``)."""
        return {name: getattr(self, name) or "" for name in self.FIELDS}

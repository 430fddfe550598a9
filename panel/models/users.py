"""Users (customers and operators) and their personal API tokens."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask_login import UserMixin
from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from panel.extensions import db
from panel.models.base import utcnow

_hasher = PasswordHasher()

ROLES = ("customer", "operator")
MIN_PASSWORD_LENGTH = 8  # the one password rule: sign-up, password change and `panel users create`


class User(UserMixin, db.Model):
    """A panel account. ``role`` is ``customer`` or ``operator``; passwords are Argon2id hashes."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="customer")
    is_active_flag: Mapped[bool] = mapped_column("is_active", default=True)
    # the language the user chose (panel.i18n.LANGUAGES); None: the browser's
    locale: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)

    tokens = relationship("ApiToken", back_populates="user", cascade="all, delete-orphan")

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
        row = db.session.scalar(db.select(cls).where(cls.token_hash == cls.hash(plain or "")))
        if row is None:
            return None
        last = row.last_used_at
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=timezone.utc)
        if last is None or utcnow() - last > timedelta(minutes=1):  # not a write per request
            row.last_used_at = utcnow()
        return row.user

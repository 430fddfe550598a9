"""Server-side records of signed-in sessions (``user_sessions``), on top of Flask-Login.

``start(user)`` renews the session at login: the old cookie session is cleared (with it the
pre-login CSRF token), a row is stored and its random token goes into the new cookie. The user
loader accepts a cookie only while its row exists, so logout, a password change, disabling an
account and "log out everywhere" end sessions for real, copied cookies included.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import request, session
from flask_login import login_user, logout_user

from panel.extensions import db
from panel.models import User, UserSession
from panel.models.base import utcnow

SESSION_KEY = "_sid"
TOUCH_EVERY = timedelta(minutes=5)  # last_seen_at is written at most this often


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(user: User) -> UserSession:
    """Log ``user`` in on a fresh session (commits). Raises nothing; call after every check passed."""
    session.clear()
    token = secrets.token_urlsafe(32)
    row = UserSession(user=user, token_hash=_hash(token), ip_address=(request.remote_addr or "")[:45],
                      user_agent=(request.user_agent.string or "")[:200])
    db.session.add(row)
    db.session.commit()
    login_user(user)
    session[SESSION_KEY] = token
    return row


def current() -> UserSession | None:
    """The row of this request's session, or ``None``."""
    token = session.get(SESSION_KEY)
    if not token or not isinstance(token, str):
        return None
    from sqlalchemy.orm import joinedload

    return db.session.scalar(db.select(UserSession).where(UserSession.token_hash == _hash(token))
                             .options(joinedload(UserSession.user, innerjoin=True)))  # one statement a request


def load_user(user_id: str) -> User | None:
    """Flask-Login user loader: the user, only while this cookie's session row exists."""
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        return None
    row = current()
    if row is None or row.user_id != uid:
        return None
    user = row.user
    if not user.is_active:
        return None
    now = utcnow()
    seen = row.last_seen_at
    if seen is not None and seen.tzinfo is None:
        from datetime import timezone

        seen = seen.replace(tzinfo=timezone.utc)
    if seen is None or now - seen > TOUCH_EVERY:
        row.last_seen_at = now
        db.session.commit()
    return user


def end() -> None:
    """Log out this session (its row is deleted; commits)."""
    row = current()
    if row is not None:
        db.session.delete(row)
        db.session.commit()
    logout_user()
    session.clear()


def revoke_all(user: User, *, keep_current: bool = False) -> int:
    """Delete ``user``'s session rows (all, or all but this request's); returns how many. Not
    committed: the caller commits with the change that caused it."""
    keep = current() if keep_current else None
    query = db.delete(UserSession).where(UserSession.user_id == user.id)
    if keep is not None:
        query = query.where(UserSession.id != keep.id)
    return db.session.execute(query).rowcount or 0


def describe_agent(agent: str) -> str:
    """"Firefox on Linux" from a User-Agent string (what the sessions list shows; "" if unknown)."""
    text = agent or ""
    browser = next((name for token, name in (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
                                             ("Chrome/", "Chrome"), ("Safari/", "Safari"), ("curl/", "curl"))
                    if token in text), "")
    system = next((name for token, name in (("Android", "Android"), ("iPhone", "iPhone"), ("iPad", "iPad"),
                                            ("Windows", "Windows"), ("Mac OS X", "macOS"), ("Linux", "Linux"))
                   if token in text), "")
    return " on ".join(part for part in (browser, system) if part) or text[:40]

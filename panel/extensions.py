"""Flask extensions, created unbound; ``create_app`` calls ``init_app`` on each."""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData

# Deterministic constraint names so Alembic migrations work the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING))
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])


def account_key() -> str:
    """Rate-limit key for per-account limits: the logged-in user, else a hash of the bearer token,
    else the remote address. (Limits are checked before the API's own authentication runs.)"""
    import hashlib

    from flask import request
    from flask_login import current_user

    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return "token:" + hashlib.sha256(header[7:].strip().encode()).hexdigest()[:32]
    if current_user and current_user.is_authenticated:
        return f"user:{current_user.id}"
    return "addr:" + (get_remote_address() or "")


def is_operator_request() -> bool:
    """Operators bypass the order limit (seed 004's admin bypass)."""
    from flask import request
    from flask_login import current_user

    if current_user and current_user.is_authenticated and not request.headers.get("Authorization"):
        return bool(current_user.is_operator)
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        from panel.models import ApiToken

        user = ApiToken.authenticate(header[7:].strip())
        return bool(user and user.is_operator)
    return False


def order_limit() -> str:
    """``PANEL_ORDER_LIMIT`` (default "20 per hour"): new orders per account."""
    from flask import current_app

    return current_app.config["ORDER_LIMIT"]

"""Flask extensions, created unbound; ``create_app`` calls ``init_app`` on each."""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
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


def bearer_user():
    """The active-or-not ``User`` owning this request's ``Authorization: Bearer`` token, or ``None``
    (no bearer header, or an unknown token): ``ApiToken.authenticate`` once per request, kept in
    the request's WSGI environ (the order limit's key, its operator bypass and the API's
    authentication all ask; ``flask.g`` would outlive the request where an app context is shared,
    as in tests)."""
    from flask import request

    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    plain = header[7:].strip()
    cached = request.environ.get("panel.bearer_user")
    if cached is None or cached[0] != plain:
        from panel.models import ApiToken

        cached = request.environ["panel.bearer_user"] = (plain, ApiToken.authenticate(plain))
    return cached[1]


def order_account_key() -> str:
    """Rate-limit key of the order limit: the ordering account, the same whether it orders on the web
    (session) or through the API (bearer token), so ``PANEL_ORDER_LIMIT`` is one budget per account.
    An unknown token is keyed by its hash (the API answers 401 anyway)."""
    import hashlib

    from flask import request
    from flask_login import current_user

    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        user = bearer_user()
        if user is None:
            return "token:" + hashlib.sha256(header[7:].strip().encode()).hexdigest()[:32]
        return f"user:{user.id}"
    if current_user and current_user.is_authenticated:
        return f"user:{current_user.id}"
    return "addr:" + (get_remote_address() or "")


def is_operator_request() -> bool:
    """Operators bypass the order limit (seed 004's admin bypass)."""
    from flask import request
    from flask_login import current_user

    if current_user and current_user.is_authenticated and not request.headers.get("Authorization"):
        return bool(current_user.is_operator)
    user = bearer_user()
    return bool(user and user.is_operator)


def address_key() -> str:
    """Rate-limit key for per-address limits: the client address (after ``PANEL_TRUSTED_PROXIES``)."""
    return "addr:" + (get_remote_address() or "")


def login_email_key() -> str:
    """Rate-limit key for login attempts per account: the submitted email, normalised."""
    from flask import request

    return "login:" + str(request.form.get("email", "")).strip().lower()[:254]


def _setting(name: str):
    def value() -> str:
        from flask import current_app

        return current_app.config[name]

    value.__name__ = name.lower()
    value.__doc__ = f"``PANEL_{name}``: a Flask-Limiter rule such as ``10 per minute``."
    return value


order_limit = _setting("ORDER_LIMIT")                    # new orders per account (seed 004: 2/hour)
order_address_limit = _setting("ORDER_ADDRESS_LIMIT")    # new orders per client address
api_limit = _setting("API_LIMIT")                        # API requests per account (seed 004: 10/min)
api_address_limit = _setting("API_ADDRESS_LIMIT")        # API requests per client address
login_limit = _setting("LOGIN_LIMIT")                    # login attempts per address and per email


def is_exempt_api_request() -> bool:
    """The general API limit spares operators and the panel's own pages (session GETs such as the
    usage charts); bearer-token and anonymous callers count."""
    from flask import request
    from flask_login import current_user

    if not request.headers.get("Authorization") and current_user and current_user.is_authenticated:
        return True
    return is_operator_request()


def order_placed(response) -> bool:
    """``deduct_when`` of the per-account order limit (of the order form and of
    ``POST /api/v1/orders``): only an order that was placed (a 2xx or a redirect to Checkout or
    the service) counts; a form or API answer with field errors (4xx) does
    not, so a customer's typos never lock them out of ordering."""
    return response.status_code < 400

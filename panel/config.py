"""Configuration: defaults, then ``PANEL_*`` environment variables (Flask's ``from_prefixed_env``).

Recognised variables (all optional unless noted):

* ``PANEL_SECRET_KEY``: session signing key, at least 16 characters. Required outside debug,
  testing and demo mode.
* ``PANEL_DATABASE_URL``: SQLAlchemy URL; default ``sqlite:///<instance>/panel.db``.
* ``PANEL_REDIS_URL``: ``redis://...``; unset means jobs run in-process (no Redis needed).
* ``PANEL_PUBLIC_URL``: the panel's public base URL (links in mail, Stripe return URLs).
* ``PANEL_ENCRYPTION_KEY``: a Fernet key for secrets at rest; default: derived from the secret key.
* ``PANEL_PLUGIN_<NAME>_<KEY>``: overrides plugin ``NAME``'s setting ``KEY`` (e.g.
  ``PANEL_PLUGIN_PDS_API_TOKEN``).
* ``PANEL_PLUGINS``: a comma-separated allow-list of plugin entry points to load; ``PANEL_SAFE_MODE=1``
  loads none (CTFd's safe mode).
* ``PANEL_JOB_RETRIES`` (default 5) and ``PANEL_JOB_BACKOFF`` (seconds, comma list, default
  ``5,15,60,300,900``): retry policy for transient backend errors.
* ``PANEL_MAIL_BACKOFF`` (seconds, comma list, default ``30,120,600,1800,3600,3600,3600``): when an
  email the SMTP server did not take is tried again; after the last step it is given up and shown
  on ``/admin/mail`` (about three hours of retries by default). ``PANEL_MAIL_RETENTION_DAYS``
  (default 30): sent mail rows are deleted this long after sending.
* ``PANEL_SWEEP_INTERVAL`` (seconds, default 5): how often workers (and the demo) hand over work
  that is due or whose lease expired, whatever the job queue says.
* ``PANEL_LEASE_SECONDS`` (default 30): how long a worker's claim on an operation or a Stripe
  event holds without a heartbeat; a killed worker's work is taken over after this.
* ``PANEL_DB_PING_AFTER`` (seconds, default 1): a database connection that sat idle in the pool
  this long is pinged before it is used (PostgreSQL); busy connections are not.
* ``PANEL_SETTINGS_CACHE_SECONDS`` (default 10): how long a process keeps plugin settings before
  reading them again (the process that changes them sees the change at once).
* ``PANEL_WORKER_THREADS`` (default 4): jobs one ``panel worker`` process runs at once (threads).
* ``PANEL_JOB_MAX_LOST_RUNS`` (default 10): runs of one item that may die without reporting
  before it gives up (they never count against ``PANEL_JOB_RETRIES``).
* ``PANEL_JOB_MAX_WAIT`` (seconds, default 3600): how long an operation may stay "in progress on
  the backend" (``panel.backends.InProgress``, e.g. a Pterodactyl install) before it gives up.
* ``PANEL_PURGE_INTERVAL`` (seconds, default 3600; 0: never): how often the worker asks each
  backend to purge retained data whose retention passed (``Backend.purge_expired``).
* ``PANEL_SWEEP_AFTER`` (seconds, default 300): work overdue by more than this is listed for
  operators (no worker is taking it).
* ``PANEL_USAGE_INTERVAL`` (seconds, default 300) and ``PANEL_USAGE_RETENTION_DAYS`` (default 30):
  how often live services' usage is sampled for the charts, and how long samples are kept.
* ``PANEL_LOGIN_LIMIT`` (default ``10 per minute``): Flask-Limiter rule for login attempts.
* ``PANEL_ORDER_LIMIT`` (default ``2 per hour``, seed 004's provisioning limit): new orders per
  account, web and API; ``PANEL_ORDER_ADDRESS_LIMIT`` (``10 per hour``) per client address.
* ``PANEL_API_LIMIT`` (default ``10 per minute``, seed 004's general limit): API requests per account
  (bearer token; anonymous callers by address); ``PANEL_API_ADDRESS_LIMIT`` (``60 per minute``)
  per client address. Operators are exempt from all of these.
* ``PANEL_TRUSTED_PROXIES`` (default 0): reverse proxies in front of the panel (werkzeug ProxyFix).
* ``PANEL_MAX_CONTENT_LENGTH`` (bytes, default 2 MiB): larger request bodies answer 413.
* ``PANEL_OPERATOR_2FA`` (``optional`` or ``required``): ``required`` makes operators set up TOTP.
* ``PANEL_EMAIL_VERIFICATION`` (``required`` or ``off``; default ``required`` when mail is set up):
  customers confirm their address before the first order.
* ``PANEL_RESET_TOKEN_MINUTES`` (60) / ``PANEL_EMAIL_TOKEN_HOURS`` (48): how long emailed links work.
* ``PANEL_METRICS_TOKEN``: bearer token for ``GET /metrics`` (unset: no metrics route);
  ``PANEL_LOG_FORMAT`` (``text`` or ``json``).
* ``PANEL_HSTS_MAX_AGE`` (seconds, default 31536000): HSTS lifetime when the public URL is https.
* ``PANEL_SUPPORT_URL`` / ``PANEL_SUPPORT_EMAIL``: where customers are sent when something went
  wrong (shown with failed, retrying and suspended services).
* ``PANEL_ACTION_LIMIT`` (default ``10 per minute``) and ``PANEL_REVEAL_LIMIT`` (default
  ``5 per minute``): service actions (restart...) and credential reveals per account.
* ``PANEL_OWN_DOMAINS``: comma-separated domains the operator owns; a customer's hostname outside
  them (and outside each backend's own domains) needs a DNS TXT verification first.
* ``PANEL_DNS_RESOLVERS``: comma-separated ``ip`` or ``ip:port`` resolvers for those checks
  (default: the system's); ``PANEL_DOMAIN_CHECK_INTERVAL`` (seconds, default 300): how often the
  worker checks pending verifications.
"""
from __future__ import annotations

import os
from urllib.parse import urlparse


class ConfigError(RuntimeError):
    """Raised at start-up for a missing or invalid setting; the message names the variable."""


DEFAULTS = {
    "SECRET_KEY": None,
    "DATABASE_URL": None,
    "REDIS_URL": None,
    "PUBLIC_URL": "http://127.0.0.1:5000",
    "ENCRYPTION_KEY": None,
    "PLUGINS": None,
    "SAFE_MODE": False,
    "DEMO": False,
    "JOB_RETRIES": 5,
    "JOB_BACKOFF": "5,15,60,300,900",
    "MAIL_BACKOFF": "30,120,600,1800,3600,3600,3600",
    "MAIL_RETENTION_DAYS": 30,
    "JOB_TIMEOUT": 600,
    "WORKER_THREADS": 4,
    "SETTINGS_CACHE_SECONDS": 10,
    "DB_PING_AFTER": 1.0,
    "SWEEP_AFTER": 300,
    "SWEEP_INTERVAL": 5,
    "LEASE_SECONDS": 30,
    "JOB_MAX_LOST_RUNS": 10,
    "JOB_MAX_WAIT": 3600,
    "PURGE_INTERVAL": 3600,
    "USAGE_INTERVAL": 300,
    "USAGE_RETENTION_DAYS": 30,
    "LOGIN_LIMIT": "10 per minute",
    "ORDER_LIMIT": "2 per hour",
    "ORDER_ADDRESS_LIMIT": "10 per hour",
    "API_LIMIT": "10 per minute",
    "API_ADDRESS_LIMIT": "60 per minute",
    "SIGNUP_PLAN": None,
    "SIGNUP_PARAMS": None,
    "ACTION_LIMIT": "10 per minute",
    "REVEAL_LIMIT": "5 per minute",
    "SUPPORT_URL": None,
    "SUPPORT_EMAIL": None,
    "OWN_DOMAINS": "",
    "DNS_RESOLVERS": "",
    "DOMAIN_CHECK_INTERVAL": 300,
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    "WTF_CSRF_TIME_LIMIT": None,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "RATELIMIT_HEADERS_ENABLED": True,
    "TRUSTED_PROXIES": 0,
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    "HSTS_MAX_AGE": 31536000,
    "OPERATOR_2FA": "optional",
    "EMAIL_VERIFICATION": None,  # "required" or "off"; unset: required when mail is configured
    "RESET_TOKEN_MINUTES": 60,
    "METRICS_TOKEN": None,
    "LOG_FORMAT": "text",
    "EMAIL_TOKEN_HOURS": 48,
    # Nothing after a commit may turn a success into a 500: when the limiter's storage (Redis) is
    # unreachable, limits fail open and fall back to per-process memory.
    "RATELIMIT_SWALLOW_ERRORS": True,
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    "RATELIMIT_STORAGE_OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
}


def load(app, overrides: dict | None = None) -> None:
    """Fill ``app.config`` from defaults, ``PANEL_*`` variables and ``overrides``, then validate.

    Raises ``ConfigError`` naming the ``PANEL_`` variable at fault.
    """
    app.config.update({k: v for k, v in DEFAULTS.items()})
    app.config.from_prefixed_env("PANEL")
    if overrides:
        app.config.update(overrides)
    cfg = app.config

    demo = bool(cfg.get("DEMO")) or bool(cfg.get("TESTING")) or bool(cfg.get("DEBUG"))
    secret = cfg.get("SECRET_KEY")
    if not secret:
        if not demo:
            raise ConfigError("PANEL_SECRET_KEY is not set: set it to a long random string "
                              "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        cfg["SECRET_KEY"] = "insecure-demo-key-do-not-use-in-production"
    elif len(str(secret)) < 16:
        raise ConfigError("PANEL_SECRET_KEY is too short: use at least 16 characters")

    db_url = cfg.get("DATABASE_URL") or cfg.get("SQLALCHEMY_DATABASE_URI")
    if not db_url:
        os.makedirs(app.instance_path, exist_ok=True)
        db_url = "sqlite:///" + os.path.join(app.instance_path, "panel.db")
    db_url = str(db_url)
    if db_url.startswith("postgres://"):
        db_url = "postgresql://" + db_url[len("postgres://"):]
    if db_url.startswith("postgresql://"):
        # SQLAlchemy 2.1 defaults to psycopg 3; we ship psycopg2-binary, so name it.
        db_url = "postgresql+psycopg2://" + db_url[len("postgresql://"):]
    if not db_url.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql"):
        raise ConfigError(f"PANEL_DATABASE_URL is not a supported database URL (got scheme "
                          f"{db_url.split(':', 1)[0]!r}; use sqlite:/// or postgresql://)")
    cfg["SQLALCHEMY_DATABASE_URI"] = db_url
    if db_url.startswith("sqlite"):
        cfg.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 30}})
    else:
        # No pool_pre_ping (a round trip on every checkout): connections are recycled after
        # 30 minutes, and one that sat idle in the pool for PANEL_DB_PING_AFTER seconds is pinged
        # when it is checked out (panel.app), so a database restart during a quiet spell costs
        # no request; SQLAlchemy drops the whole pool on the first disconnect it sees.
        cfg.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_recycle": 1800, "pool_size": 10, "max_overflow": 20})

    redis_url = cfg.get("REDIS_URL")
    if redis_url and urlparse(str(redis_url)).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("PANEL_REDIS_URL must start with redis://, rediss:// or unix://")

    public = str(cfg.get("PUBLIC_URL") or "")
    parsed = urlparse(public)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"PANEL_PUBLIC_URL must be an absolute http(s) URL (got {public!r})")
    cfg["PUBLIC_URL"] = public.rstrip("/")

    _client_area_settings(cfg)

    for name in ("SETTINGS_CACHE_SECONDS", "DB_PING_AFTER"):
        try:
            cfg[name] = float(cfg[name])
            if not cfg[name] >= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"PANEL_{name} must be a number of seconds, 0 or more (got {cfg[name]!r})") from None
    for name in ("SWEEP_INTERVAL", "LEASE_SECONDS"):
        try:
            cfg[name] = float(cfg[name])
            if not cfg[name] > 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"PANEL_{name} must be a positive number of seconds (got {cfg[name]!r})") from None
    try:
        cfg["WORKER_THREADS"] = int(cfg["WORKER_THREADS"])
        if not 1 <= cfg["WORKER_THREADS"] <= 256:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"PANEL_WORKER_THREADS must be a whole number from 1 to 256 (got "
                          f"{cfg['WORKER_THREADS']!r})") from None
    for name in ("JOB_RETRIES", "JOB_TIMEOUT", "JOB_MAX_LOST_RUNS", "JOB_MAX_WAIT", "PURGE_INTERVAL",
                 "SWEEP_AFTER", "USAGE_INTERVAL",
                 "USAGE_RETENTION_DAYS", "MAIL_RETENTION_DAYS", "TRUSTED_PROXIES", "MAX_CONTENT_LENGTH", "HSTS_MAX_AGE",
                 "RESET_TOKEN_MINUTES", "EMAIL_TOKEN_HOURS", "DOMAIN_CHECK_INTERVAL"):
        try:
            cfg[name] = int(cfg[name])
            if cfg[name] < 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"PANEL_{name} must be a non-negative integer (got {cfg[name]!r})") from None
    for name in ("JOB_BACKOFF", "MAIL_BACKOFF"):
        backoff = cfg[name]
        try:
            if isinstance(backoff, (int, float)):  # from_prefixed_env parses "5" as JSON
                backoff = [backoff]
            if isinstance(backoff, str):
                backoff = [int(x) for x in backoff.split(",") if x.strip()]
            cfg[name] = [int(x) for x in backoff]
            if any(x < 0 for x in cfg[name]):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"PANEL_{name} must be a comma-separated list of seconds, e.g. 5,15,60") from None

    from limits import parse_many

    for name in ("LOGIN_LIMIT", "ORDER_LIMIT", "ORDER_ADDRESS_LIMIT", "API_LIMIT", "API_ADDRESS_LIMIT"):
        try:
            parse_many(str(cfg[name]))
        except ValueError:
            raise ConfigError(f"PANEL_{name} is not a rate limit like '10 per minute' (got {cfg[name]!r})") from None

    cfg["OPERATOR_2FA"] = str(cfg.get("OPERATOR_2FA") or "optional").lower()
    if cfg["OPERATOR_2FA"] not in ("optional", "required"):
        raise ConfigError(f"PANEL_OPERATOR_2FA must be 'optional' or 'required' (got {cfg['OPERATOR_2FA']!r})")
    verification = cfg.get("EMAIL_VERIFICATION")
    if verification in (None, ""):
        verification = "required" if cfg.get("MAIL_SERVER") else "off"
    verification = {True: "required", False: "off"}.get(verification, str(verification).lower())
    if verification not in ("required", "off"):
        raise ConfigError(f"PANEL_EMAIL_VERIFICATION must be 'required' or 'off' (got {verification!r})")
    cfg["EMAIL_VERIFICATION"] = verification

    if cfg.get("ENCRYPTION_KEY"):
        from panel.crypto import is_fernet_key

        if not is_fernet_key(cfg["ENCRYPTION_KEY"]):
            raise ConfigError("PANEL_ENCRYPTION_KEY is not a valid Fernet key (32 url-safe "
                              "base64-encoded bytes; make one with cryptography's Fernet.generate_key())")

    signup_params = cfg.get("SIGNUP_PARAMS")
    if isinstance(signup_params, str):
        import json

        try:
            signup_params = json.loads(signup_params) if signup_params.strip() else {}
        except ValueError:
            signup_params = None
            raise ConfigError('PANEL_SIGNUP_PARAMS must be a JSON object, e.g. {"username": "user{user_id}"}') from None
    if signup_params is not None and not isinstance(signup_params, dict):
        raise ConfigError('PANEL_SIGNUP_PARAMS must be a JSON object, e.g. {"username": "user{user_id}"}')
    cfg["SIGNUP_PARAMS"] = dict(signup_params or {})
    cfg["SIGNUP_PLAN"] = (str(cfg.get("SIGNUP_PLAN") or "").strip()) or None

    plugins = cfg.get("PLUGINS")
    if isinstance(plugins, str):
        cfg["PLUGINS"] = [p.strip() for p in plugins.split(",") if p.strip()]
    cfg["SAFE_MODE"] = str(cfg.get("SAFE_MODE")).lower() in ("1", "true", "yes", "on")

    # PANEL_PLUGIN_<NAME>_<KEY>: collected raw; the plugin registry matches them to settings.
    if not (overrides and "PLUGIN_ENV" in overrides):  # tests may pass their own
        cfg["PLUGIN_ENV"] = {k[len("PANEL_PLUGIN_"):]: v for k, v in os.environ.items()
                             if k.startswith("PANEL_PLUGIN_")}
    cfg.pop("PLUGIN", None)


def _split(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


def _client_area_settings(cfg) -> None:
    """``PANEL_SUPPORT_URL``/``_EMAIL``, ``PANEL_OWN_DOMAINS`` and ``PANEL_DNS_RESOLVERS``."""
    url = cfg.get("SUPPORT_URL")
    if url:
        parsed = urlparse(str(url))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"PANEL_SUPPORT_URL must be an absolute http(s) URL (got {url!r})")
    email = cfg.get("SUPPORT_EMAIL")
    if email and "@" not in str(email):
        raise ConfigError(f"PANEL_SUPPORT_EMAIL must be an email address (got {email!r})")
    domains = []
    for domain in _split(cfg.get("OWN_DOMAINS")):
        domain = domain.lower().strip(".")
        if "." not in domain or " " in domain or "/" in domain:
            raise ConfigError(f"PANEL_OWN_DOMAINS: {domain!r} is not a domain name like example.com")
        domains.append(domain)
    cfg["OWN_DOMAINS"] = domains
    resolvers = []
    for entry in _split(cfg.get("DNS_RESOLVERS")):
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "53")
        try:
            import ipaddress

            ipaddress.ip_address(host)
            resolvers.append((host, int(port or 53)))
        except ValueError:
            raise ConfigError(f"PANEL_DNS_RESOLVERS: {entry!r} is not an IP address or ip:port") from None
    cfg["DNS_RESOLVERS"] = resolvers

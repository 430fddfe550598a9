"""The application factory."""
from __future__ import annotations

import os

from flask import Flask

from panel import config as panel_config
from panel.extensions import csrf, db, limiter, login_manager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resource_dir(package: str) -> str:
    """The folder of a data package shipped with hostpanel (``panel.templates``,
    ``panel.migrations``): the top-level ``templates/``/``migrations/`` of a source checkout or
    editable install, ``site-packages/panel/...`` in an installed wheel (importlib.resources)."""
    from importlib.resources import files

    return str(files(package))


def _instance_path() -> str | None:
    """``PANEL_INSTANCE_PATH``, else ``instance/`` beside a source checkout, else Flask's default
    for installed packages (``<prefix>/var/panel-instance``)."""
    if os.environ.get("PANEL_INSTANCE_PATH"):
        return os.environ["PANEL_INSTANCE_PATH"]
    if os.path.exists(os.path.join(ROOT, "pyproject.toml")):
        return os.path.join(ROOT, "instance")
    return None


class PanelFlask(Flask):
    """Flask with *bare* endpoints: machine-to-machine routes such as Stripe's webhook that need
    none of the request machinery of pages and the API (CSRF, rate limits, the input guards, the
    operator 2FA check, the locale, the session cookie, Flask-Limiter's headers). For a request to
    an endpoint in ``bare_endpoints`` only the hooks in ``bare_before_request_funcs`` /
    ``bare_after_request_funcs`` run (the security headers and the request metrics), and the
    session is not saved; ``after_this_request`` callbacks and teardown still run. Each hook
    skipped costs a delivery 0.1-0.3 ms of CPU (issue 14's webhook profile).

    Use ``bare(endpoint)`` to mark an endpoint, ``also_bare(before=..., after=...)`` to let a hook
    run for bare endpoints too (register it with ``before_request``/``after_request`` as usual)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bare_endpoints: set[str] = set()
        self.bare_before_request_funcs: list = []
        self.bare_after_request_funcs: list = []

    def bare(self, endpoint: str) -> None:
        """Run ``endpoint`` (``"blueprint.view"``) with the bare hooks only."""
        self.bare_endpoints.add(endpoint)

    def also_bare(self, *, before=None, after=None) -> None:
        """Let the ``before`` and/or ``after`` request hook run for bare endpoints too (in the
        order added; ``after`` hooks in reverse, as Flask does)."""
        if before is not None:
            self.bare_before_request_funcs.append(before)
        if after is not None:
            self.bare_after_request_funcs.append(after)

    def preprocess_request(self):
        """Flask's, or for a bare endpoint only the bare before-request hooks."""
        from flask import request

        if request.endpoint not in self.bare_endpoints:
            return super().preprocess_request()
        for func in self.bare_before_request_funcs:
            rv = func()
            if rv is not None:
                return rv
        return None

    def process_response(self, response):
        """Flask's, or for a bare endpoint the ``after_this_request`` callbacks and the bare
        after-request hooks, without saving a session."""
        from flask import request
        from flask.globals import request_ctx

        if request.endpoint not in self.bare_endpoints:
            return super().process_response(response)
        for func in request_ctx._after_request_functions:
            response = func(response)
        for func in reversed(self.bare_after_request_funcs):
            response = func(response)
        return response


def ping_idle_connections(engine, idle_seconds: float) -> None:
    """Ping (``SELECT 1``, the dialect's ``do_ping``) a pooled connection that sat idle for
    ``idle_seconds`` or more when it is checked out; a dead one is replaced (``DisconnectionError``
    makes the pool open another). Busy connections are used without a ping, unlike
    ``pool_pre_ping``, which pings on every checkout."""
    import time

    from sqlalchemy import event, exc

    if idle_seconds <= 0 or getattr(engine, "_panel_idle_pings", False):
        return
    engine._panel_idle_pings = True  # one engine may serve several apps (tests)

    @event.listens_for(engine, "checkin")
    def _idle_since(dbapi_conn, record):
        record.info["panel_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, proxy):
        since = record.info.get("panel_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
            dbapi_conn.rollback()  # the ping opened a transaction; the caller starts its own
        except Exception as error:
            raise exc.DisconnectionError(f"an idle database connection was dead ({type(error).__name__})") from error


def init_migrate(app: Flask):
    """Bind Flask-Migrate (alembic, mako) to ``app`` with the panel's migrations and return its
    ``app.extensions["migrate"]``; once per app. ``create_app`` leaves this to the first use (the
    ``panel db`` commands, ``flask_migrate.upgrade()`` and friends, through ``_DeferredMigrate``), so
    a web worker does not carry alembic (about 11 MB of RSS, issue 14)."""
    current = app.extensions.get("migrate")
    if current is None or isinstance(current, _DeferredMigrate):
        from flask_migrate import Migrate

        Migrate(app, db, directory=resource_dir("panel.migrations"))
    return app.extensions["migrate"]


class _DeferredMigrate:
    """``app.extensions["migrate"]`` until Flask-Migrate is first used: any attribute read (as
    ``flask_migrate``'s commands and ``migrations/env.py`` do) binds it (``init_migrate``)."""

    def __init__(self, app: Flask):
        self._app = app

    def __getattr__(self, name):
        if name.startswith("__") or name == "_app":  # copy/pickle probes, a half-built object
            raise AttributeError(name)
        return getattr(init_migrate(self._app), name)


def create_app(config: dict | None = None) -> Flask:
    """Build the panel app: config from ``PANEL_*`` variables (then ``config`` overrides),
    extensions, plugins, blueprints. Raises ``panel.config.ConfigError`` on bad configuration.
    """
    app = PanelFlask("panel", template_folder=resource_dir("panel.templates"),
                     static_folder=os.path.join(os.path.dirname(__file__), "static"),
                     instance_path=_instance_path())
    panel_config.load(app, config)

    db.init_app(app)
    app.extensions["migrate"] = _DeferredMigrate(app)  # the `panel db` commands: panel.cli
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    csrf.init_app(app)
    if not app.config.get("RATELIMIT_STORAGE_URI"):
        # shared across gunicorn workers when Redis is there; per-process memory otherwise
        app.config["RATELIMIT_STORAGE_URI"] = app.config.get("REDIS_URL") or "memory://"
    if str(app.config["RATELIMIT_STORAGE_URI"]).startswith(("redis", "rediss", "unix")):
        from panel.dispatch import fail_fast_retry

        # an unreachable Redis must not hold a request up: fail fast, then the in-memory fallback
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {"retry": fail_fast_retry(),
                                                   **app.config.get("RATELIMIT_STORAGE_OPTIONS", {})}
    limiter.init_app(app)

    from panel import models  # noqa: F401  (register tables)
    from panel.auth import sessions as auth_sessions

    # a cookie counts only while its server-side session row exists (panel.auth.sessions)
    login_manager.user_loader(auth_sessions.load_user)

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        from sqlalchemy import event

        with app.app_context():
            @event.listens_for(db.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

    else:
        with app.app_context():
            ping_idle_connections(db.engine, float(app.config["DB_PING_AFTER"]))

    from panel import security

    security.init_app(app)  # before any route: the bounded <int:> converter, guards, headers

    from panel import counts, dispatch, jobs
    from panel.plugins import PanelPlugins

    counts.init_app(app)
    dispatch.init_app(app)
    jobs.init_app(app)
    from panel import doctor

    doctor.init_app(app)  # the periodic loop's heartbeat, read by panel doctor
    plugins = PanelPlugins(app)

    from panel.admin import bp as admin_bp
    from panel.api import bp as api_bp
    from panel.auth import bp as auth_bp
    from panel.customer import bp as customer_bp

    app.register_blueprint(auth_bp)
    from panel.auth.routes import enforce_operator_2fa

    app.before_request(enforce_operator_2fa)
    app.register_blueprint(customer_bp)
    app.register_blueprint(admin_bp, url_prefix="/admin")
    app.register_blueprint(api_bp, url_prefix="/api/v1")
    csrf.exempt(api_bp)

    def register_blueprint(blueprint, url_prefix=None):
        app.register_blueprint(blueprint, url_prefix=url_prefix)

    plugins.pm.hook.register_blueprints(register=register_blueprint)

    from panel.billing import init_app as init_billing
    from panel.notify import init_app as init_notify

    init_billing(app)
    init_notify(app)

    @app.context_processor
    def inject():
        from panel.backends import MASK

        return {"MASK": MASK, "demo": app.config.get("DEMO"),
                "has_endpoint": lambda name: name in app.view_functions,
                "support": {"url": app.config.get("SUPPORT_URL"), "email": app.config.get("SUPPORT_EMAIL")}}

    from panel import errors, i18n, ops

    i18n.init_app(app)
    errors.init_app(app)
    ops.init_app(app)  # /healthz, /readyz, /metrics, request metrics, log format
    return app

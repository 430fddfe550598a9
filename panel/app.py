"""The application factory."""
from __future__ import annotations

import logging
import os

from flask import Flask, render_template, request

from panel import config as panel_config
from panel.extensions import csrf, db, limiter, login_manager, migrate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def create_app(config: dict | None = None) -> Flask:
    """Build the panel app: config from ``PANEL_*`` variables (then ``config`` overrides),
    extensions, plugins, blueprints. Raises ``panel.config.ConfigError`` on bad configuration.
    """
    app = Flask("panel", template_folder=os.path.join(ROOT, "templates"),
                static_folder=os.path.join(os.path.dirname(__file__), "static"),
                instance_path=os.environ.get("PANEL_INSTANCE_PATH") or os.path.join(ROOT, "instance"))
    panel_config.load(app, config)

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(ROOT, "migrations"))
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
    from panel.models import User

    @login_manager.user_loader
    def load_user(user_id: str):
        return db.session.get(User, int(user_id))

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

    from panel import dispatch, jobs
    from panel.plugins import PanelPlugins

    dispatch.init_app(app)
    jobs.init_app(app)
    plugins = PanelPlugins(app)

    from panel.admin import bp as admin_bp
    from panel.api import bp as api_bp
    from panel.auth import bp as auth_bp
    from panel.customer import bp as customer_bp

    app.register_blueprint(auth_bp)
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
                "has_endpoint": lambda name: name in app.view_functions}

    @app.errorhandler(404)
    def not_found(exc):
        if request.path.startswith("/api/"):
            from panel.api.errors import error_response

            return error_response(404, "not_found", "not found")
        return render_template("error.html", code=404, message="Page not found."), 404

    @app.errorhandler(429)
    def too_many(exc):
        if request.path.startswith("/api/"):
            from panel.api.errors import error_response

            return error_response(429, "rate_limited", "too many requests, slow down")
        return render_template("error.html", code=429, message="Too many attempts. Wait a minute and try again."), 429

    @app.errorhandler(500)
    def server_error(exc):
        if request.path.startswith("/api/"):
            from panel.api.errors import error_response

            return error_response(500, "internal", "internal error")
        return render_template("error.html", code=500, message="Something went wrong on our side."), 500

    if not app.debug and not app.testing:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app

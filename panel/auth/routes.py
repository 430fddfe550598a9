"""Account routes. Login is rate-limited (``PANEL_LOGIN_LIMIT``) by Flask-Limiter."""
from urllib.parse import urlparse

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from panel.auth import bp
from panel.auth.forms import LoginForm, SignupForm
from panel.extensions import db, limiter
from panel.models import User


def _safe_next(target: str | None) -> str | None:
    if not target:
        return None
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/"):
        return None
    return target


def _home(user: User) -> str:
    return url_for("admin.services") if user.is_operator else url_for("customer.services")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_LIMIT"], methods=["POST"])
def login():
    """GET/POST /login, rate-limited by ``PANEL_LOGIN_LIMIT``; redirects to ``next`` (same-site paths
    only).
    """
    if current_user.is_authenticated:
        return redirect(_home(current_user))
    form = LoginForm()
    if form.validate_on_submit():
        user = User.by_email(form.email.data)
        if user is None or not user.is_active or not user.check_password(form.password.data):
            form.password.errors.append("Wrong email or password.")
        else:
            db.session.commit()  # a password rehash, if any
            login_user(user)
            return redirect(_safe_next(request.args.get("next")) or _home(user))
    return render_template("auth/login.html", form=form)


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit("20 per hour", methods=["POST"])
def signup():
    """GET/POST /signup: create a customer account (Argon2id hash) and log in."""
    if current_user.is_authenticated:
        return redirect(_home(current_user))
    form = SignupForm()
    if form.validate_on_submit():
        if User.by_email(form.email.data):
            form.email.errors.append("An account with this email already exists.")
        else:
            user = User(email=User.normalize_email(form.email.data), role="customer")
            user.set_password(form.password.data)
            db.session.add(user)
            db.session.commit()
            login_user(user)
            flash("Welcome! Pick a plan to get started.", "success")
            return redirect(_safe_next(request.args.get("next")) or url_for("customer.plans"))
    return render_template("auth/signup.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """POST /logout (CSRF-protected)."""
    logout_user()
    return redirect(url_for("auth.login"))

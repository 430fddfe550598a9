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
            from panel.orders import order_signup_plan

            if order_signup_plan(user) is not None:  # PANEL_SIGNUP_PLAN (seed 003's new_crew_tier)
                flash("Welcome! Your free service is being set up.", "success")
                return redirect(url_for("customer.services"))
            flash("Welcome! Pick a plan to get started.", "success")
            return redirect(_safe_next(request.args.get("next")) or url_for("customer.plans"))
    return render_template("auth/signup.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """POST /logout (CSRF-protected)."""
    logout_user()
    return redirect(url_for("auth.login"))


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    """GET/POST /account: change the password; list, create and revoke personal API tokens.

    A new token is shown once, on the page that created it (only its SHA-256 is stored)."""
    from panel.auth.forms import PasswordForm, TokenForm
    from panel.customer.forms import ActionForm
    from panel.models import ApiToken

    password_form = PasswordForm(prefix="pw")
    token_form = TokenForm(prefix="tok")
    new_token = None
    if password_form.submit.data and password_form.validate_on_submit():
        if not current_user.check_password(password_form.current.data):
            password_form.current.errors.append("This is not your current password.")
        else:
            current_user.set_password(password_form.password.data)
            db.session.commit()
            flash("Password changed.", "success")
            return redirect(url_for("auth.account"))
    if token_form.submit.data and token_form.validate_on_submit():
        _, new_token = ApiToken.issue(current_user, token_form.name.data.strip())
        db.session.commit()
        token_form = TokenForm(prefix="tok", formdata=None)
    tokens = db.session.scalars(db.select(ApiToken).where(ApiToken.user_id == current_user.id)
                                .order_by(ApiToken.id.desc())).all()
    return render_template("auth/account.html", password_form=password_form, token_form=token_form,
                           tokens=tokens, new_token=new_token, action_form=ActionForm())


@bp.route("/account/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
def revoke_token(token_id):
    """POST: delete one of the user's API tokens (it stops working at once)."""
    from flask import abort

    from panel.customer.forms import ActionForm
    from panel.models import ApiToken

    if not ActionForm().validate_on_submit():
        abort(400)
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != current_user.id:
        abort(404)
    db.session.delete(token)
    db.session.commit()
    flash(f"Token {token.prefix} revoked.", "success")
    return redirect(url_for("auth.account"))

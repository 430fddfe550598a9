"""Account routes: sign up, log in (with TOTP 2FA), log out, forgotten password, email
verification and change, the account page (password, 2FA, sessions, API tokens) and the profile.

Login, the 2FA step and the reset form are rate-limited (``PANEL_LOGIN_LIMIT``) per client address.
"""
from __future__ import annotations

import time

from flask import (abort, current_app, flash, redirect, render_template, request, session, url_for)
from flask_login import current_user, login_required

from panel.auth import bp, sessions, tokens, twofactor
from panel.auth.forms import (EmailChangeForm, ForgotForm, LoginForm, PasswordForm, ProfileForm,
                              ResetForm, SignupForm, TokenForm, TwoFactorDisableForm, TwoFactorForm,
                              TwoFactorSetupForm)
from panel.extensions import db, limiter, login_email_key
from panel.models import ApiToken, Profile, User, UserSession
from panel.models.base import utcnow
from panel.security import safe_next

PENDING_2FA = "_2fa_pending"  # {"u": user id, "at": epoch seconds, "next": path}
PENDING_2FA_SECONDS = 300
SETUP_SECRET = "_2fa_setup_secret"


@bp.errorhandler(tokens.TokenError)
def _bad_link(exc):
    """An emailed link that is invalid, expired or used: say so, and how to get a new one (400)."""
    return render_template("auth/link_error.html", message=str(exc)), 400


@bp.after_request
def _no_store(response):
    """Account pages (recovery codes, new API tokens, 2FA keys) are never cached."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _audit_self(action: str, **after) -> None:
    """Operators' own security changes (password, 2FA, email, sessions) go to the audit log too."""
    if current_user.is_authenticated and current_user.is_operator:
        from panel import audit

        audit.record(current_user, action, current_user._get_current_object(), after=after or None)


def _login_limit() -> str:
    return current_app.config["LOGIN_LIMIT"]


def _home(user: User) -> str:
    return url_for("admin.services") if user.is_operator else url_for("customer.services")


def operator_2fa_required() -> bool:
    """``PANEL_OPERATOR_2FA=required``: operators must use two-factor authentication."""
    return current_app.config["OPERATOR_2FA"] == "required"


def verification_required() -> bool:
    """Whether customers must confirm their email address before the first order
    (``PANEL_EMAIL_VERIFICATION``)."""
    return current_app.config["EMAIL_VERIFICATION"] == "required"


def _sign_in(user: User, next_url: str | None):
    """Start the session and go on: to 2FA set-up when it is required and missing."""
    sessions.start(user)
    if user.is_operator and operator_2fa_required() and not user.has_2fa:
        flash("Operators must use two-factor authentication here. Set it up to continue.", "info")
        return redirect(url_for("auth.twofactor_setup"))
    return redirect(next_url or _home(user))


def _mail(to: str, subject: str, body: str) -> bool:
    from panel import notify

    return notify.send(to, subject, body)


def _link(endpoint: str, **values) -> str:
    return current_app.config["PUBLIC_URL"] + url_for(endpoint, **values)


def send_verification(user: User) -> bool:
    """Mail ``user`` a link that confirms their address. Returns whether it was queued."""
    link = _link("auth.verify_email", token=tokens.make(tokens.VERIFY, user))
    hours = current_app.config["EMAIL_TOKEN_HOURS"]
    return _mail(user.email, "Confirm your email address",
                 f"Hello,\n\nplease confirm your email address for hostpanel by opening this link:\n\n{link}\n\n"
                 f"The link works for {hours} hours. If you did not sign up, you can ignore this message.\n")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
@limiter.limit(_login_limit, key_func=login_email_key, methods=["POST"])
def login():
    """GET/POST /login, rate-limited by ``PANEL_LOGIN_LIMIT``; redirects to ``next`` (same-site paths
    only). An unknown email costs one Argon2 verification like a known one (no probing by timing);
    a disabled account is told so only after a correct password; with 2FA on, the code is asked
    next (``/login/2fa``).
    """
    if current_user.is_authenticated:
        return redirect(_home(current_user))
    form = LoginForm()
    if form.validate_on_submit():
        user = User.by_email(form.email.data)
        if user is None:
            User.burn_password_check(form.password.data)
            form.password.errors.append("Wrong email or password.")
        elif not user.check_password(form.password.data):
            form.password.errors.append("Wrong email or password.")
        elif not user.is_active:
            db.session.commit()  # a password rehash, if any
            form.email.errors.append("This account is disabled. Contact support if you think this is a mistake.")
        else:
            db.session.commit()  # a password rehash, if any
            next_url = safe_next(request.args.get("next"))
            if user.has_2fa:
                session.clear()
                session[PENDING_2FA] = {"u": user.id, "at": int(time.time()), "next": next_url}
                return redirect(url_for("auth.login_2fa"))
            return _sign_in(user, next_url)
    return render_template("auth/login.html", form=form)


@bp.route("/login/2fa", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def login_2fa():
    """GET/POST /login/2fa: the second step, a TOTP code or a recovery code, within five minutes
    of the password step."""
    pending = session.get(PENDING_2FA)
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > PENDING_2FA_SECONDS:
        session.pop(PENDING_2FA, None)
        flash("Please log in again.", "info")
        return redirect(url_for("auth.login"))
    user = db.session.get(User, pending.get("u"))
    if user is None or not user.is_active or not user.has_2fa:
        session.pop(PENDING_2FA, None)
        return redirect(url_for("auth.login"))
    form = TwoFactorForm()
    if form.validate_on_submit():
        how = twofactor.check(user, form.code.data)
        if how is None:
            form.code.errors.append("That code is not right. Use the current code from your app, or a recovery code.")
        else:
            db.session.commit()
            if how == "recovery":
                left = len(user.recovery_codes or [])
                flash(f"You used a recovery code; {left} left. Make new ones on your account page if you "
                      f"are running low.", "info")
            return _sign_in(user, pending.get("next"))
    return render_template("auth/login_2fa.html", form=form)


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit("20 per hour", methods=["POST"])
def signup():
    """GET/POST /signup: create a customer account (Argon2id hash), mail the verification link, log in."""
    if current_user.is_authenticated:
        return redirect(_home(current_user))
    form = SignupForm()
    if form.validate_on_submit():
        if User.by_email(form.email.data):
            form.email.errors.append("An account with this email already exists.")
        else:
            user = User(email=form.email.data, role="customer")
            user.set_password(form.password.data)
            db.session.add(user)
            db.session.commit()
            sent = send_verification(user)
            next_url = safe_next(request.args.get("next"))
            sessions.start(user)
            from panel.orders import order_signup_plan

            signup_order = order_signup_plan(user)  # PANEL_SIGNUP_PLAN (seed 003's new_crew_tier)
            if sent:
                flash(f"Welcome! We sent a link to {user.email}: open it to confirm your address.", "success")
            elif signup_order is not None:
                flash("Welcome! Your free service is being set up.", "success")
            else:
                flash("Welcome! Pick a plan to get started.", "success")
            if signup_order is not None and not next_url:
                return redirect(url_for("customer.services"))
            return redirect(next_url or url_for("customer.plans"))
    return render_template("auth/signup.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """POST /logout (CSRF-protected): ends this session for good (a copied cookie stops working)."""
    sessions.end()
    return redirect(url_for("auth.login"))


# --------------------------------------------------------------------------- forgotten password

@bp.route("/forgot", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def forgot():
    """GET/POST /forgot: mail a reset link. The answer is the same whether or not the address has
    an account (nothing to probe)."""
    form = ForgotForm()
    if form.validate_on_submit():
        user = User.by_email(form.email.data)
        if user is not None and user.is_active:
            link = _link("auth.reset", token=tokens.make(tokens.RESET, user))
            minutes = current_app.config["RESET_TOKEN_MINUTES"]
            _mail(user.email, "Reset your hostpanel password",
                  f"Hello,\n\nsomeone (hopefully you) asked to reset the password of your hostpanel account.\n"
                  f"Choose a new password here:\n\n{link}\n\nThe link works once, for {minutes} minutes. If you "
                  f"did not ask for it, ignore this message: your password stays as it is.\n")
        flash(f"If an account exists for {form.email.data}, we have sent it a link to reset the password. "
              f"Check your inbox (and the spam folder).", "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/forgot.html", form=form)


@bp.route("/reset/<token>", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def reset(token):
    """GET/POST /reset/<token>: set a new password from an emailed link (single use, expiring). All
    of the account's sessions end; the address counts as confirmed."""
    user, _ = tokens.load(tokens.RESET, token)
    form = ResetForm()
    if form.validate_on_submit():
        user.set_password(form.password.data)
        if user.email_verified_at is None:
            user.email_verified_at = utcnow()
        sessions.revoke_all(user)
        db.session.commit()
        flash("Your password was changed. Log in with the new one.", "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset.html", form=form)


# --------------------------------------------------------------------------- email verification / change

@bp.route("/verify/<token>")
def verify_email(token):
    """GET /verify/<token>: confirm the address the link was sent to."""
    user, _ = tokens.load(tokens.VERIFY, token)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        db.session.commit()
        if current_app.config.get("EMAIL_VERIFICATION") == "required":
            from panel.orders import order_signup_plan

            order_signup_plan(user)  # the sign-up plan waited for a confirmed address
    flash("Thank you: your email address is confirmed.", "success")
    return redirect(url_for("auth.account") if current_user.is_authenticated else url_for("auth.login"))


@bp.route("/account/verify", methods=["POST"])
@login_required
@limiter.limit("5 per hour", methods=["POST"])
def resend_verification():
    """POST: mail the confirmation link again."""
    from panel.customer.forms import ActionForm

    if not ActionForm().validate_on_submit():
        abort(400)
    if current_user.email_verified:
        flash("Your address is already confirmed.", "info")
    elif send_verification(current_user):
        flash(f"We sent a new link to {current_user.email}.", "success")
    else:
        flash("We cannot send email right now. Please contact support.", "error")
    return redirect(url_for("auth.account"))


@bp.route("/account/email", methods=["GET", "POST"])
@login_required
def change_email():
    """GET/POST /account/email: ask to change the address; the change happens when the link mailed
    to the NEW address is opened (the old address is told)."""
    form = EmailChangeForm()
    if form.validate_on_submit():
        if not current_user.check_password(form.current.data):
            form.current.errors.append("This is not your current password.")
        elif form.email.data == current_user.email:
            form.email.errors.append("This is already your address.")
        elif User.by_email(form.email.data):
            form.email.errors.append("Another account uses this address.")
        else:
            token = tokens.make(tokens.CHANGE_EMAIL, current_user, new=form.email.data)
            link = _link("auth.confirm_email_change", token=token)
            if _mail(form.email.data, "Confirm your new email address",
                     f"Hello,\n\nopen this link to make {form.email.data} the address of your hostpanel "
                     f"account (instead of {current_user.email}):\n\n{link}\n"):
                flash(f"We sent a link to {form.email.data}. Your address changes when you open it.", "success")
            else:
                flash("We cannot send email right now, so the address cannot be changed. Please contact support.",
                      "error")
            return redirect(url_for("auth.account"))
    return render_template("auth/change_email.html", form=form)


@bp.route("/account/email/confirm/<token>")
def confirm_email_change(token):
    """GET: apply an email change from the link sent to the new address (single use)."""
    user, payload = tokens.load(tokens.CHANGE_EMAIL, token)
    new = payload.get("new")
    if not isinstance(new, str) or User.by_email(new):
        raise tokens.TokenError("Another account uses this address now, so it cannot be yours.")
    old = user.email
    user.email = new
    user.email_verified_at = utcnow()
    if user.is_operator:
        from panel import audit

        audit.record(user, "account.email", user, before={"email": old}, after={"email": new})
    db.session.commit()
    _mail(old, "Your hostpanel email address was changed",
          f"Hello,\n\nthe address of your hostpanel account was changed from {old} to {new}. If you did not "
          f"do this, contact support now.\n")
    flash(f"Your email address is now {new}.", "success")
    return redirect(url_for("auth.account") if current_user.is_authenticated else url_for("auth.login"))


# --------------------------------------------------------------------------- account page

@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    """GET/POST /account: change the password (the other sessions end); 2FA status; sessions; list,
    create and revoke personal API tokens.

    A new token is shown once, on the page that created it (only its SHA-256 is stored)."""
    from panel.customer.forms import ActionForm

    password_form = PasswordForm(prefix="pw")
    token_form = TokenForm(prefix="tok")
    new_token = None
    if password_form.submit.data and password_form.validate_on_submit():
        if not current_user.check_password(password_form.current.data):
            password_form.current.errors.append("This is not your current password.")
        else:
            current_user.set_password(password_form.password.data)
            ended = sessions.revoke_all(current_user, keep_current=True)
            _audit_self("account.password", sessions_ended=ended)
            db.session.commit()
            flash("Password changed." + (f" {ended} other session(s) were logged out." if ended else ""), "success")
            return redirect(url_for("auth.account"))
    if token_form.submit.data and token_form.validate_on_submit():
        _, new_token = ApiToken.issue(current_user, token_form.name.data.strip())
        db.session.commit()
        token_form = TokenForm(prefix="tok", formdata=None)
    api_tokens = db.session.scalars(db.select(ApiToken).where(ApiToken.user_id == current_user.id)
                                    .order_by(ApiToken.id.desc())).all()
    mine = sessions.current()
    rows = db.session.scalars(db.select(UserSession).where(UserSession.user_id == current_user.id)
                              .order_by(UserSession.last_seen_at.desc())).all()
    return render_template("auth/account.html", password_form=password_form, token_form=token_form,
                           tokens=api_tokens, new_token=new_token, action_form=ActionForm(),
                           sessions=rows, current_session=mine, verification_required=verification_required(),
                           describe_agent=sessions.describe_agent)


@bp.route("/account/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
def revoke_token(token_id):
    """POST: delete one of the user's API tokens (it stops working at once)."""
    from panel.customer.forms import ActionForm

    if not ActionForm().validate_on_submit():
        abort(400)
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != current_user.id:
        abort(404)
    db.session.delete(token)
    db.session.commit()
    flash(f"Token {token.prefix} revoked.", "success")
    return redirect(url_for("auth.account"))


@bp.route("/account/sessions/<int:session_id>/revoke", methods=["POST"])
@login_required
def revoke_session(session_id):
    """POST: log out one of the user's other sessions."""
    from panel.customer.forms import ActionForm

    if not ActionForm().validate_on_submit():
        abort(400)
    row = db.session.get(UserSession, session_id)
    if row is None or row.user_id != current_user.id:
        abort(404)
    mine = sessions.current()
    if mine is not None and mine.id == row.id:
        sessions.end()
        return redirect(url_for("auth.login"))
    db.session.delete(row)
    db.session.commit()
    flash("That session was logged out.", "success")
    return redirect(url_for("auth.account"))


@bp.route("/account/sessions/revoke-all", methods=["POST"])
@login_required
def revoke_all_sessions():
    """POST: log out everywhere, this browser included."""
    from panel.customer.forms import ActionForm

    if not ActionForm().validate_on_submit():
        abort(400)
    _audit_self("account.sessions.revoke_all")
    sessions.revoke_all(current_user)
    db.session.commit()
    sessions.end()
    flash("You were logged out everywhere.", "success")
    return redirect(url_for("auth.login"))


# --------------------------------------------------------------------------- two-factor authentication

@bp.route("/account/2fa", methods=["GET", "POST"])
@login_required
def twofactor_setup():
    """GET/POST /account/2fa: turn on TOTP: scan the QR code (or type the key), confirm one code,
    get ten recovery codes (shown once)."""
    if current_user.has_2fa:
        return _twofactor_settings(TwoFactorDisableForm())
    secret = session.get(SETUP_SECRET)
    if not isinstance(secret, str) or len(secret) != 32:
        secret = session[SETUP_SECRET] = twofactor.new_secret()
    form = TwoFactorSetupForm()
    if form.validate_on_submit():
        step = twofactor.verify_code(secret, form.code.data)
        if step is None:
            form.code.errors.append("That code is not right. Check the time on your phone and use the newest code.")
        else:
            codes = twofactor.enable(current_user, secret, step)
            _audit_self("account.2fa.enable")
            db.session.commit()
            session.pop(SETUP_SECRET, None)
            return render_template("auth/recovery_codes.html", codes=codes)
    uri = twofactor.provisioning_uri(secret, current_user.email)
    return render_template("auth/twofactor.html", enabled=False, form=form, secret=secret,
                           qr=twofactor.qr_svg(uri), uri=uri)


def _twofactor_settings(form: TwoFactorDisableForm) -> str:
    """The page of an account with 2FA on: status, recovery codes left, turn off / new codes."""
    return render_template("auth/twofactor.html", enabled=True, disable_form=form,
                           required=current_user.is_operator and operator_2fa_required(),
                           left=len(current_user.recovery_codes or []))


def _checked_2fa_form() -> TwoFactorDisableForm | None:
    form = TwoFactorDisableForm()
    if not form.validate_on_submit():
        return form
    if not current_user.check_password(form.current.data):
        form.current.errors.append("This is not your password.")
    elif twofactor.check(current_user, form.code.data) is None:
        form.code.errors.append("That code is not right.")
    else:
        return None
    return form


@bp.route("/account/2fa/disable", methods=["POST"])
@login_required
def twofactor_disable():
    """POST: turn 2FA off (password and a current code), unless it is required for operators."""
    if current_user.is_operator and operator_2fa_required():
        flash("Two-factor authentication is required for operators here; it cannot be turned off.", "error")
        return redirect(url_for("auth.twofactor_setup"))
    form = _checked_2fa_form()
    if form is not None:
        return _twofactor_settings(form), 400
    twofactor.disable(current_user)
    _audit_self("account.2fa.disable")
    db.session.commit()
    flash("Two-factor authentication is off.", "success")
    return redirect(url_for("auth.account"))


@bp.route("/account/2fa/recovery", methods=["POST"])
@login_required
def twofactor_recovery():
    """POST: replace the recovery codes (password and a current code); the new ones are shown once."""
    form = _checked_2fa_form()
    if form is not None:
        return _twofactor_settings(form), 400
    codes = twofactor.new_recovery_codes(current_user)
    _audit_self("account.2fa.recovery_codes")
    db.session.commit()
    return render_template("auth/recovery_codes.html", codes=codes)


def enforce_operator_2fa():
    """``before_request``: with ``PANEL_OPERATOR_2FA=required``, a signed-in operator without 2FA
    reaches only the 2FA set-up, logout and static files."""
    if not operator_2fa_required() or not current_user.is_authenticated or not current_user.is_operator:
        return None
    if current_user.has_2fa or request.endpoint in ("auth.twofactor_setup", "auth.logout", "static"):
        return None
    if request.path.startswith("/api/") and request.headers.get("Authorization"):
        return None  # bearer tokens are their own credential
    flash("Set up two-factor authentication to continue.", "info")
    return redirect(url_for("auth.twofactor_setup"))


# --------------------------------------------------------------------------- profile

@bp.route("/account/profile", methods=["GET", "POST"])
@login_required
def profile():
    """GET/POST /account/profile: name, company, contact details, billing address and tax ID."""
    row = current_user.profile or Profile(user_id=current_user.id)
    form = ProfileForm(obj=row)
    if form.validate_on_submit():
        for name in Profile.FIELDS:
            value = (getattr(form, name).data or "").strip()
            setattr(row, name, value.upper() if name == "country" else value)
        if row not in db.session:
            db.session.add(row)
        db.session.commit()
        flash("Profile saved.", "success")
        return redirect(url_for("auth.profile"))
    return render_template("auth/profile.html", form=form)

"""Accounts (issue 11 section 3): password reset and email links through a real SMTP server on
loopback (aiosmtpd), email verification before the first order, email change, TOTP 2FA with
recovery codes, PANEL_OPERATOR_2FA, disabled accounts, one email rule, the profile."""
from __future__ import annotations

import re
import time

import pyotp
import pytest
from corelib import add_user, login

from panel.extensions import db
from panel.models import Service, User

aiosmtpd = pytest.importorskip("aiosmtpd.controller")


@pytest.fixture
def mail_app(make_app, smtp):
    from memory_backend import REMOTE

    REMOTE.__init__()
    _, port = smtp
    app = make_app(MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_DEFAULT_SENDER="panel@example.com",
                   MAIL_SUPPRESS_SEND=False, PUBLIC_URL="http://localhost")
    with app.app_context():
        from panel.models import Plan

        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        yield app


def _path(link: str) -> str:
    return link.replace("http://localhost", "")


def _wait_mail(app, inbox, n):
    from corelib import wait_jobs

    wait_jobs(app)
    return inbox.wait_for(n)


# --------------------------------------------------------------------------- password reset

def test_password_reset_by_email_is_single_use_and_ends_sessions(mail_app, smtp):
    inbox, _ = smtp
    add_user("reset@example.com", "old-password-1")
    elsewhere = mail_app.test_client()
    with mail_app.app_context():  # its own context: Flask-Login caches the user on g
        login(elsewhere, "reset@example.com", "old-password-1")
    client = mail_app.test_client()
    r = client.post("/forgot", data={"email": "reset@example.com"})
    known_answer = client.get(r.headers["Location"]).get_data(as_text=True)
    messages = _wait_mail(mail_app, inbox, 1)
    assert messages[0]["to"] == ["reset@example.com"] and "Reset" in messages[0]["subject"]
    link = inbox.link()
    assert client.get(_path(link)).status_code == 200
    r = client.post(_path(link), data={"password": "new-password-1", "confirm": "new-password-1"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert "Wrong email or password." in login(client, "reset@example.com", "old-password-1").get_data(as_text=True)
    assert login(client, "reset@example.com", "new-password-1").status_code == 302
    with mail_app.app_context():
        assert elsewhere.get("/services").status_code == 302  # the old session ended
    # single use: the link is dead now
    again = mail_app.test_client().post(_path(link), data={"password": "third-pass-1", "confirm": "third-pass-1"})
    assert again.status_code == 400 and "already used" in again.get_data(as_text=True)
    assert "If an account exists for reset@example.com" in known_answer


def test_forgot_does_not_reveal_whether_the_address_exists(mail_app, smtp):
    inbox, _ = smtp
    add_user("here@example.com")
    client = mail_app.test_client()
    pages = []
    for address in ("here@example.com", "nobody@example.com"):
        r = client.post("/forgot", data={"email": address})
        assert r.status_code == 302
        pages.append(client.get(r.headers["Location"]).get_data(as_text=True).replace(address, "ADDRESS"))
    assert pages[0] == pages[1]
    # _wait_mail waits until no job is in flight, and the SMTP sink stores a message before it
    # answers 250: whatever was sent is in the inbox now, so exactly one means none for "nobody"
    assert [m["to"] for m in _wait_mail(mail_app, inbox, 1)] == [["here@example.com"]]
    assert len(inbox.messages) == 1


def test_reset_links_expire_and_tampered_ones_fail(mail_app, smtp, monkeypatch):
    import itsdangerous.timed

    from panel.auth import tokens

    user = add_user("exp@example.com")
    token = tokens.make(tokens.RESET, user)
    client = mail_app.test_client()
    assert client.get(f"/reset/{token}").status_code == 200
    assert "not valid" in client.get(f"/reset/{token}x").get_data(as_text=True)
    later = time.time() + 61 * 60
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: later)
    r = client.get(f"/reset/{token}")
    assert r.status_code == 400 and "expired" in r.get_data(as_text=True)


# --------------------------------------------------------------------------- email verification

def test_email_verification_before_the_first_order(mail_app, smtp):
    inbox, _ = smtp
    client = mail_app.test_client()
    r = client.post("/signup", data={"email": "new@example.com", "password": "longenough1", "confirm": "longenough1"})
    assert r.status_code == 302
    messages = _wait_mail(mail_app, inbox, 1)
    assert messages[0]["to"] == ["new@example.com"] and "Confirm" in messages[0]["subject"]
    r = client.post("/order/f", data={"param_name": "first"})
    assert "confirm your email address first" in client.get("/plans").get_data(as_text=True) or \
        "confirm your email address first" in r.get_data(as_text=True)
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0
    # the API says so too, with its error shape
    from corelib import token_for

    user = User.by_email("new@example.com")
    api = client.post("/api/v1/orders", json={"plan": "f", "params": {"name": "first"}}, headers=token_for(user))
    assert api.status_code == 403 and api.get_json()["error"]["code"] == "email_unverified"
    assert "not confirmed" in client.get("/account").get_data(as_text=True)
    assert client.get(_path(inbox.link())).status_code == 302
    db.session.expire_all()
    assert User.by_email("new@example.com").email_verified
    r = client.post("/order/f", data={"param_name": "first"})
    assert r.status_code == 302 and "/services/" in r.headers["Location"]


def test_verification_can_be_turned_off(make_app):
    app = make_app(EMAIL_VERIFICATION="off")
    client = app.test_client()
    with app.app_context():
        from panel.models import Plan

        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
    client.post("/signup", data={"email": "nv@example.com", "password": "longenough1", "confirm": "longenough1"})
    r = client.post("/order/f", data={"param_name": "nv"})
    assert r.status_code == 302 and "/services/" in r.headers["Location"]


def test_email_change_is_confirmed_by_the_new_address(mail_app, smtp):
    inbox, _ = smtp
    add_user("old@example.com")
    add_user("taken@example.com")
    client = mail_app.test_client()
    login(client, "old@example.com")
    r = client.post("/account/email", data={"email": "taken@example.com", "current": "password123"})
    assert "Another account uses this address." in r.get_data(as_text=True)
    r = client.post("/account/email", data={"email": "new@example.com", "current": "wrong"})
    assert "This is not your current password." in r.get_data(as_text=True)
    r = client.post("/account/email", data={"email": "New@Example.com", "current": "password123"})
    assert r.status_code == 302
    messages = _wait_mail(mail_app, inbox, 1)
    assert messages[0]["to"] == ["new@example.com"]
    db.session.expire_all()
    assert User.by_email("old@example.com") is not None  # nothing changes until the link is opened
    link = inbox.link()
    assert client.get(_path(link)).status_code == 302
    db.session.expire_all()
    assert User.by_email("old@example.com") is None and User.by_email("new@example.com").email_verified
    notice = _wait_mail(mail_app, inbox, 2)[1]
    assert notice["to"] == ["old@example.com"] and "changed" in notice["subject"]
    assert client.get(_path(link)).status_code == 400  # single use


# --------------------------------------------------------------------------- 2FA

def _enable_2fa(client) -> tuple[str, list[str]]:
    page = client.get("/account/2fa").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    assert "<svg" in page
    r = client.post("/account/2fa", data={"code": "000000"})
    assert "That code is not right." in r.get_data(as_text=True)
    r = client.post("/account/2fa", data={"code": pyotp.TOTP(secret).now()})
    codes = re.findall(r"<li><code>([0-9a-f]{6}-[0-9a-f]{6})</code></li>", r.get_data(as_text=True))
    assert len(codes) == 10
    return secret, codes


def test_totp_sign_in_with_replay_protection_and_recovery_codes(client, customer):
    login(client, customer.email)
    secret, codes = _enable_2fa(client)
    db.session.expire_all()
    assert customer.has_2fa and customer.totp_secret and secret not in customer.totp_secret  # encrypted
    client.post("/logout")
    r = login(client, customer.email)
    assert r.status_code == 302 and r.headers["Location"].endswith("/login/2fa")
    assert client.get("/services").status_code == 302  # not signed in yet
    assert "That code is not right" in client.post("/login/2fa", data={"code": "123456"}).get_data(as_text=True)
    totp = pyotp.TOTP(secret)
    # the code that turned 2FA on cannot be replayed
    step = int(time.time()) // 30
    used = customer.totp_last_step
    assert used is not None and used >= step - 1
    r = client.post("/login/2fa", data={"code": totp.at(used * 30)})
    assert "That code is not right" in r.get_data(as_text=True)
    # a recovery code works once
    r = client.post("/login/2fa", data={"code": codes[0]})
    assert r.status_code == 302 and client.get("/services").status_code == 200
    client.post("/logout")
    login(client, customer.email)
    assert "That code is not right" in client.post("/login/2fa", data={"code": codes[0]}).get_data(as_text=True)
    assert client.post("/login/2fa", data={"code": codes[1].upper()}).status_code == 302
    db.session.expire_all()
    assert len(customer.recovery_codes) == 8


def test_turning_2fa_off_needs_password_and_code(client, customer):
    login(client, customer.email)
    secret, _ = _enable_2fa(client)
    r = client.post("/account/2fa/disable", data={"current": "wrong", "code": "000000"})
    assert r.status_code == 400 and "This is not your password." in r.get_data(as_text=True)
    code = pyotp.TOTP(secret).at(int(time.time()) + 30)  # the next step: the current one was used
    r = client.post("/account/2fa/disable", data={"current": "password123", "code": code})
    assert r.status_code == 302
    db.session.expire_all()
    assert not customer.has_2fa and customer.totp_secret is None


def test_operator_2fa_required(make_app):
    app = make_app(OPERATOR_2FA="required")
    with app.app_context():
        add_user("ops@example.com", role="operator")
        add_user("cust@example.com")
    client = app.test_client()
    r = login(client, "ops@example.com")
    assert r.headers["Location"].endswith("/account/2fa")
    r = client.get("/admin/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/account/2fa")
    with app.app_context():
        secret, _ = _enable_2fa(client)
    assert client.get("/admin/").status_code == 200
    r = client.post("/account/2fa/disable", data={"current": "password123", "code": pyotp.TOTP(secret).now()})
    assert r.status_code == 302
    with app.app_context():
        assert User.by_email("ops@example.com").has_2fa  # cannot be turned off
    customer = app.test_client()
    assert login(customer, "cust@example.com").headers["Location"].endswith("/services")  # optional for customers
    assert customer.get("/services").status_code == 200


# --------------------------------------------------------------------------- rules

def test_disabled_account_is_told_after_a_correct_password_only(client, customer):
    customer.is_active_flag = False
    db.session.commit()
    wrong = login(client, customer.email, "not-the-password").get_data(as_text=True)
    assert "Wrong email or password." in wrong and "disabled" not in wrong
    right = login(client, customer.email).get_data(as_text=True)
    assert "This account is disabled." in right
    assert client.get("/services").status_code == 302


@pytest.mark.parametrize("address", ["someone@host.test", "a@localhost", "no-at-sign", "x@y.invalid"])
def test_one_email_rule_for_the_cli_and_the_forms(app, client, address):
    from panel.cli import cli

    result = app.test_cli_runner().invoke(cli, ["users", "create", address, "--password", "longenough1"])
    assert result.exit_code != 0 and "Invalid value for EMAIL" in result.output
    assert db.session.scalar(db.select(db.func.count()).select_from(User)) == 0
    r = client.post("/signup", data={"email": address, "password": "longenough1", "confirm": "longenough1"})
    assert r.status_code == 200 and 'data-field="email"' in r.get_data(as_text=True)


def test_cli_created_users_can_log_in(app, client):
    from panel.cli import cli

    result = app.test_cli_runner().invoke(cli, ["users", "create", "Ops@Example.com", "--password", "longenough1",
                                                "--operator"])
    assert result.exit_code == 0, result.output
    assert login(client, "ops@example.com", "longenough1").status_code == 302


# --------------------------------------------------------------------------- profile

def test_profile_saves_address_and_validates_the_tax_id(client, customer):
    login(client, customer.email)
    page = client.get("/account/profile").get_data(as_text=True)
    assert 'value="CH"' in page and "Switzerland" in page
    data = {"full_name": "Alice Muster", "company": "Muster AG", "phone": "+41 44 000 00 00",
            "address_line1": "Bahnhofstrasse 1", "postal_code": "8001", "city": "Zürich", "region": "ZH",
            "country": "CH", "tax_id": "CHE-123.456.789"}
    r = client.post("/account/profile", data=data)
    assert r.status_code == 200 and "not a valid tax ID for CH" in r.get_data(as_text=True)
    r = client.post("/account/profile", data=data | {"tax_id": "CHE-116.281.710 MWST"})
    assert r.status_code == 302
    db.session.expire_all()
    profile = User.by_email(customer.email).profile
    assert profile.country == "CH" and profile.city == "Zürich" and profile.tax_id == "CHE-116.281.710 MWST"
    assert profile.to_json()["company"] == "Muster AG"
    r = client.post("/account/profile", data=data | {"country": "XX", "tax_id": ""})
    assert r.status_code == 200 and 'data-field="country"' in r.get_data(as_text=True)

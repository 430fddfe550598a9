"""Email notifications through a real SMTP server on loopback (aiosmtpd)."""

import pytest
from corelib import add_user, wait_jobs
from memory_backend import REMOTE

from panel import lifecycle
from panel.extensions import db
from panel.models import Plan
from panel.orders import place_order


@pytest.fixture
def mail_app(make_app, smtp):
    REMOTE.__init__()
    _, port = smtp
    app = make_app(MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_DEFAULT_SENDER="panel@example.com",
                   MAIL_SUPPRESS_SEND=False)  # Flask-Mail suppresses mail under TESTING
    with app.app_context():
        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        yield app


def test_customer_hears_when_the_service_is_ready_suspended_and_removed(mail_app, smtp):
    inbox, _ = smtp
    user = add_user("mailme@example.com")
    svc = place_order(user, "f", {"name": "m1"}, actor="t").service
    wait_jobs(mail_app)
    wait_jobs(mail_app)  # the mail job is queued by the provision job
    msgs = inbox.wait_for(1)
    assert msgs[0]["to"] == ["mailme@example.com"] and "is ready" in msgs[0]["subject"]
    assert f"/services/{svc.id}" in msgs[0]["body"]
    lifecycle.request(svc, "suspend", actor="op")
    wait_jobs(mail_app)
    wait_jobs(mail_app)
    lifecycle.request(svc, "terminate", actor="op")
    wait_jobs(mail_app)
    wait_jobs(mail_app)
    subjects = [m["subject"] for m in inbox.wait_for(3)]
    assert any("suspended" in s for s in subjects) and any("removed" in s for s in subjects)


def test_operators_hear_about_failures_with_the_message(mail_app, smtp):
    inbox, _ = smtp
    add_user("ops1@example.com", role="operator")
    add_user("ops2@example.com", role="operator")
    user = add_user("cust@example.com")
    REMOTE.fail_next("provision", "permanent")
    svc = place_order(user, "f", {"name": "m2"}, actor="t").service
    wait_jobs(mail_app)
    wait_jobs(mail_app)
    msgs = inbox.wait_for(2)
    ops = [m for m in msgs if "ops1@example.com" in m["to"]]
    assert ops and sorted(ops[0]["to"]) == ["ops1@example.com", "ops2@example.com"]
    assert "hostname is already taken" in ops[0]["body"] and f"/admin/services/{svc.id}" in ops[0]["body"]
    customer = [m for m in msgs if m["to"] == ["cust@example.com"]]
    assert customer and "delayed" in customer[0]["subject"]
    assert "hostname is already taken" not in customer[0]["body"]


def test_operators_hear_about_a_service_that_needs_reconciling_with_the_reason(mail_app, smtp):
    from panel.backends import TransientBackendError

    inbox, _ = smtp
    add_user("ops3@example.com", role="operator")
    user = add_user("unsure@example.com")
    REMOTE.fail_next("provision", "lost", "permanent")
    REMOTE.list_error = TransientBackendError("memory: listing timed out")
    svc = place_order(user, "f", {"name": "m4"}, actor="t").service
    wait_jobs(mail_app)
    wait_jobs(mail_app)
    assert svc.status == "needs_reconcile"
    msgs = inbox.wait_for(2)
    ops = [m for m in msgs if m["to"] == ["ops3@example.com"]]
    assert ops and "needs reconciling" in ops[0]["subject"]
    assert "listing timed out" in ops[0]["body"] and f"/admin/services/{svc.id}" in ops[0]["body"]
    customer = [m for m in msgs if m["to"] == ["unsure@example.com"]]
    assert customer and "delayed" in customer[0]["subject"] and "listing" not in customer[0]["body"]


def test_billing_notices_reach_the_customer(mail_app, smtp):
    from panel import notify

    inbox, _ = smtp
    svc = place_order(add_user("payer@example.com"), "f", {"name": "m3"}, actor="t").service
    wait_jobs(mail_app)
    assert notify.customer_notice(svc, "Your payment failed", "Update your card by 2026-12-01.")
    wait_jobs(mail_app)
    notice = [m for m in inbox.wait_for(2) if m["subject"] == "Your payment failed"]
    assert notice and notice[0]["to"] == ["payer@example.com"]
    assert "2026-12-01" in notice[0]["body"] and f"/services/{svc.id}" in notice[0]["body"]


def test_without_a_mail_server_nothing_is_queued(app, customer, plans):
    from panel import notify

    assert "mail" not in app.extensions and not notify.enabled()
    assert notify.send("someone@example.com", "s", "b") is False

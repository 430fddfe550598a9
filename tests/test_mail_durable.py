"""Mail is durable work: a row first, sent by a worker under a lease, retried while the SMTP server
refuses, given up visibly (``/admin/mail``, retry button), never lost with a job queue.

A real SMTP server (aiosmtpd) on loopback, started late or not at all to play an outage; the
in-process runner and ``dispatch.sweep`` as the demo and ``panel worker`` use them.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from corelib import add_user, login, wait_jobs
from mailsink import Inbox

from panel import dispatch, lifecycle, notify
from panel.extensions import db
from panel.models import OutboundMail
from panel.models.base import utcnow
from panel.testing import free_port, wait_for


@pytest.fixture
def outage(make_app):
    """``make(backoff)``: an app whose SMTP port has no server yet; ``start()`` brings one up on it."""
    from aiosmtpd.controller import Controller

    controllers, contexts = [], []

    def make(backoff: str):
        port = free_port()
        app = make_app(MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_DEFAULT_SENDER="panel@example.com",
                       MAIL_SUPPRESS_SEND=False, MAIL_BACKOFF=backoff)
        inbox = Inbox()

        def start():
            controller = Controller(inbox, hostname="127.0.0.1", port=port)
            controller.start()
            controllers.append(controller)

        ctx = app.app_context()
        ctx.push()
        contexts.append((app, ctx))
        return app, inbox, start

    yield make
    for app, ctx in contexts:
        wait_jobs(app)
        ctx.pop()
    for controller in controllers:
        controller.stop()


def only_mail() -> OutboundMail:
    db.session.rollback()
    rows = db.session.scalars(db.select(OutboundMail).execution_options(populate_existing=True)).all()
    assert len(rows) == 1, rows
    return rows[0]


def test_an_smtp_outage_delays_mail_and_loses_none(outage):
    app, inbox, start = outage("1,1,1,1,1,1")
    assert notify.send("alice@example.com", "Your service is ready", "Open https://panel.test/services/1\n")
    assert wait_for(lambda: only_mail().attempts >= 1, timeout=20)  # the first try: nobody listens on the port
    mail = only_mail()
    assert mail.last_error.startswith("SMTP: ") and mail.state in ("queued", "running")
    assert "panel.test" not in (mail.body_encrypted or "")  # the body is encrypted at rest
    start()  # the SMTP server is back: a later try gets through
    assert wait_for(lambda: only_mail().state == "sent", timeout=30)
    assert [m["to"] for m in inbox.wait_for(1)] == [["alice@example.com"]]
    assert inbox.messages[0]["subject"] == "Your service is ready" and "panel.test/services/1" in inbox.messages[0]["body"]
    mail = only_mail()
    assert mail.attempts >= 2 and (mail.due_at, mail.body_encrypted, mail.last_error) == (None, None, None)
    assert mail.sent_at is not None
    assert notify.deliver(mail.id) == "skipped" and len(inbox.messages) == 1  # a duplicate job sends nothing


def test_mail_given_up_is_shown_to_operators_and_retried(outage):
    app, inbox, start = outage("1,1")
    operator = add_user("ops@example.com", role="operator")
    customer = add_user("c@example.com")
    notify.send(customer.email, "Reset your hostpanel password", "https://panel.test/reset/secret-token\n")
    wait_jobs(app)  # three tries (MAIL_BACKOFF has two steps), none reaches an SMTP server
    mail = only_mail()
    assert (mail.state, mail.attempts, mail.due_at) == ("failed", 3, None)
    assert dispatch.due_items() == []  # given up: the sweep leaves it alone
    client = app.test_client()
    login(client, customer.email)
    assert client.get("/admin/mail").status_code in (302, 403, 404)  # operators only
    client.post("/logout")
    login(client, operator.email)
    page = client.get("/admin/mail").get_data(as_text=True)
    assert "Reset your hostpanel password" in page and "SMTP: " in page and "Retry" in page
    assert "secret-token" not in page  # bodies are not shown
    from panel import doctor

    found = doctor.check_mail()
    assert found.problems and "1 email(s) given up" in found.problems[0].message
    assert "/admin/mail" in found.problems[0].fix
    start()
    answer = client.post(f"/admin/mail/{mail.id}/retry", data={"csrf_token": ""})
    assert answer.status_code == 302
    wait_jobs(app)
    assert wait_for(lambda: len(inbox.messages) == 1, timeout=10)
    assert "secret-token" in inbox.messages[0]["body"]
    assert only_mail().state == "sent"
    assert not doctor.check_mail().problems
    assert client.post(f"/admin/mail/{mail.id}/retry", data={}).status_code == 302  # sent: refused, nothing queued
    assert only_mail().state == "sent"
    from panel.models import AuditEntry

    assert db.session.scalar(db.select(AuditEntry.action).where(AuditEntry.action == "mail.retry")) == "mail.retry"


def test_a_lost_wake_up_is_sent_by_the_sweep(outage):
    """The row is the truth: a mail whose hand-over never reached a worker goes out with the next sweep."""
    app, inbox, start = outage("1")
    start()
    mail = OutboundMail(recipients=["late@example.com"], subject="Sweep me", body_encrypted=None, state="queued",
                        due_at=utcnow(), lease_token=0, lost_runs=0, attempts=0)
    db.session.add(mail)
    db.session.commit()  # no wake_after_commit: as if Redis lost the job
    assert dispatch.sweep() == [f"mail-{mail.id}"]
    wait_jobs(app)
    assert [m["subject"] for m in inbox.wait_for(1)] == ["Sweep me"]


def test_a_notice_from_a_rolled_back_transaction_is_never_sent(outage):
    """Inside one transaction (a Stripe event, a job) the mail row only flushes: rolled back with the
    change it tells about, it is gone, so a re-run event cannot mail twice."""
    app, inbox, start = outage("1")
    start()
    with lifecycle.one_transaction():
        notify.send("bob@example.com", "Your payment failed", "Pay by Friday.")
    db.session.rollback()
    wait_jobs(app)
    assert db.session.scalar(db.select(db.func.count()).select_from(OutboundMail)) == 0
    assert inbox.messages == []


def test_without_a_mail_server_nothing_is_recorded(app):
    assert notify.send("x@example.com", "s", "b") is False
    assert db.session.scalar(db.select(db.func.count()).select_from(OutboundMail)) == 0


def test_sent_mail_is_deleted_after_the_retention_days_and_given_up_mail_stays(outage):
    app, inbox, start = outage("1")
    old = utcnow() - timedelta(days=31)
    rows = [OutboundMail(recipients=["a@example.com"], subject="old", state="sent", sent_at=old, lease_token=0,
                         lost_runs=0, attempts=1),
            OutboundMail(recipients=["a@example.com"], subject="recent", state="sent", sent_at=utcnow() - timedelta(days=29),
                         lease_token=0, lost_runs=0, attempts=1),
            OutboundMail(recipients=["a@example.com"], subject="given up", state="failed", lease_token=0, lost_runs=0,
                         attempts=3)]
    db.session.add_all(rows)
    db.session.commit()
    assert notify.purge_sent() == 1
    assert sorted(db.session.scalars(db.select(OutboundMail.subject))) == ["given up", "recent"]
    assert "mail-retention" in dispatch.registry().periodic

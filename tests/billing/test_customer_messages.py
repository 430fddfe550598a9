"""A service suspended for non-payment tells the customer why, the amount due (Babel, exact minor
units) and where to pay (the open invoice's hosted page), in plain words; operators keep the detail."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from billinglib import checkout_session_obj, deliver, invoice_obj, make_event, settle
from corelib import login
from flows import order_paid

from panel.billing import cron
from panel.extensions import db


def _send(app, client, type_, obj, created):
    assert deliver(client, make_event(type_, obj, created=created)).status_code == 200
    settle(app)


def test_non_payment_suspension_shows_the_amount_due_and_a_pay_link(app, client, auth, paid_plans):
    service, _ = order_paid(client, auth)
    t = int(datetime.now(timezone.utc).timestamp())
    _send(app, client, "checkout.session.completed",
          checkout_session_obj(service, subscription="sub_msg", customer="cus_test"), t)
    _send(app, client, "invoice.payment_failed",
          invoice_obj(service, "sub_msg", status="open", amount=1250, invoice_id="in_msg1"), t + 100)
    cron.run(now=datetime.fromtimestamp(t + 100, timezone.utc) + timedelta(days=3, seconds=1))
    settle(app)
    db.session.refresh(service)
    assert service.status == "suspended" and service.suspension_reason == "non_payment"
    login(client, "alice@example.com")
    page = client.get(f"/services/{service.id}").get_data(as_text=True)
    card = page[page.index('id="status-card"'):page.index("</section>") if "</section>" in page else None]
    assert "Suspended: payment failed" in card and 'data-kind="non_payment"' in card
    assert "Amount due: $12.50" in card
    assert 'id="pay-now" href="https://invoice.stripe.test/i/in_msg1"' in card
    history = page[page.index('id="history"'):]
    assert "Suspended: payment failed" in history and "Payment failed" in history and "· billing" in history
    assert "stripe" not in history.split("</ol>")[0]  # actors are roles
    de = client.get(f"/services/{service.id}", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert "Gesperrt: Zahlung fehlgeschlagen" in de and "Offener Betrag: 12,50\xa0$" in de

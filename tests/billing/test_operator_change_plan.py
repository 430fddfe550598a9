"""An operator changes the plan of a service billed through Stripe (issue 12 section 3): the change
goes through billing (``panel.billing.change_plan``: the subscription's item moves to the new
price, prorated), and the backend's ``change_plan`` runs once Stripe accepted it (not again for the event); a move to
a free plan is refused here (it means cancelling the subscription)."""
from __future__ import annotations

from billinglib import PRICE_BIG, flush, settle
from corelib import add_user, login
from flows import order_paid, pay, subscription_row

from panel.extensions import db
from panel.models import AuditEntry


def test_the_operator_change_goes_through_billing(app, client, auth, paid_plans, router, upstream_client):
    from memory_backend import REMOTE

    service, _ = order_paid(client, auth)
    sub_id, _customer = pay(app, client, router, upstream_client, service)
    add_user("ops@example.com", role="operator")
    login(client, "ops@example.com")
    page = client.get(f"/admin/services/{service.id}").get_data(as_text=True)
    assert '<option value="mem-big">' in page and '<option value="mem-free">' in page
    refused = client.post(f"/admin/services/{service.id}/change-plan", data={"plan": "mem-free"},
                          follow_redirects=True).get_data(as_text=True)
    assert "billed through Stripe: a move to a free plan goes through cancelling its subscription" in refused
    r = client.post(f"/admin/services/{service.id}/change-plan", data={"plan": "mem-big"})
    assert r.status_code == 303
    assert subscription_row(service).requested_price == PRICE_BIG  # the row first
    settle(app)  # then the billing task (a job) makes the Stripe call
    sent = router.recorded("POST", f"/v1/subscriptions/{sub_id}")[-1]
    assert sent["proration_behavior"] == "create_prorations" and sent["items"][0]["price"] == PRICE_BIG
    flush(app, client, router)  # the operation it starts, then Stripe's events: the subscription's
    # created event (older than the change, delivered late) must not move the plan back
    # Stripe accepted the new price: the backend applies the plan, once (issue 9's rule)
    assert service.plan.slug == "mem-big"
    assert [c for c in REMOTE.calls if c[0] == "change_plan"] == [("change_plan", service.external_id)], REMOTE.calls
    requested = next(e for e in service.events if "requested by operator:ops@example.com" in (e.detail or ""))
    assert requested.detail == "plan change to mem-big (monthly) requested by operator:ops@example.com (prorated in Stripe)"
    entry = db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "service.change_plan"))
    assert entry.after == {"plan": "mem-big", "how": "through billing (prorated in Stripe)"}

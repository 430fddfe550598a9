"""An operator changes the plan of a service billed through Stripe (issue 12 section 3): the change
goes through billing (``panel.billing.change_plan``: the subscription's item moves to the new
price, prorated), and the backend's ``change_plan`` runs only when Stripe's event arrives; a move to
a free plan is refused here (it means cancelling the subscription)."""
from __future__ import annotations

from billinglib import PRICE_BIG
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
    sent = router.recorded("POST", f"/v1/subscriptions/{sub_id}")[-1]
    assert sent["proration_behavior"] == "create_prorations" and sent["items"][0]["price"] == PRICE_BIG
    assert subscription_row(service).requested_price == PRICE_BIG
    db.session.expire_all()
    assert service.plan.slug == "mem-paid", "the plan changes when Stripe's event says so"
    assert not any(op.action == "change_plan" for op in service.operations)
    assert not any(c[0] == "change_plan" for c in REMOTE.calls)
    assert "plan change to mem-big requested by operator:ops@example.com (prorated in Stripe)" in \
        service.events[-1].detail
    entry = db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "service.change_plan"))
    assert entry.after == {"plan": "mem-big", "how": "through billing (prorated in Stripe)"}

"""The customer's billing pages (blueprint ``billing``): overview, customer portal, plan change.

* ``GET /billing`` (``billing.overview``): per paid service its plan, price, subscription
  status, next renewal or end date, notices; the last invoices with links to Stripe's hosted
  invoice pages; the "Manage billing" button and the change-plan forms.
* ``POST /billing/portal``: makes a Stripe customer portal session on click and redirects (303).
* ``POST /billing/services/<id>/change-plan``: moves the subscription to another paid plan of
  the same backend (prorated in Stripe).
"""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from panel import lifecycle
from panel.billing import checkout, stripe_api
from panel.billing.models import BillingCustomer, BillingInvoice, Subscription
from panel.billing.stripe_api import BillingAPIError
from panel.customer.routes import own_service
from panel.extensions import db
from panel.models import Plan, Service

bp = Blueprint("billing", __name__, url_prefix="/billing")

def price_info(price_id: str | None) -> dict | None:
    """The customer's view of a Stripe price (``panel.billing.prices.offer``), or ``None``."""
    from panel.billing.prices import offer

    return offer(price_id)


def format_price(info: dict | None, price_id: str | None = None) -> str:
    """``"$12.00 / month"`` (Babel, the request's locale), or the price id when unknown."""
    if not info:
        return price_id or "—"
    return info["display"] + (f" ({info['tax']})" if info.get("tax") else "")


def billing_for(service: Service) -> Subscription | None:
    """The service's ``Subscription`` row (templates call it)."""
    if service is None or not getattr(service, "id", None):
        return None
    return checkout.subscription_for(service)


@bp.get("")
@login_required
def overview():
    """GET /billing: the customer's subscriptions (plan, price, status, renewal or end date), last
    invoices and the portal button.
    """
    rows = db.session.execute(
        db.select(Service, Subscription).join(Subscription, Subscription.service_id == Service.id)
        .where(Service.user_id == current_user.id).order_by(Service.id.desc())).all()
    items = []
    for service, sub in rows:
        price = sub.stripe_price or service.plan.stripe_price
        items.append({"service": service, "sub": sub, "price": format_price(price_info(price), price),
                      "options": checkout.change_plan_options(service)
                      if service.status in ("active", "suspended") and sub.deleted_at is None else []})
    invoices = db.session.scalars(db.select(BillingInvoice).where(BillingInvoice.user_id == current_user.id)
                                  .order_by(BillingInvoice.created.desc(), BillingInvoice.id.desc())
                                  .limit(12)).all()
    has_customer = db.session.scalar(db.select(BillingCustomer.id).where(
        BillingCustomer.user_id == current_user.id)) is not None
    from panel.billing.prices import format_money

    return render_template("billing/overview.html", items=items, invoices=invoices, has_customer=has_customer,
                           format_money=lambda cents, cur: format_money(cents or 0, cur or "usd"))


@bp.post("/portal")
@login_required
def portal():
    """POST /billing/portal: open a Stripe customer portal session (made on click: they are short-
    lived) and redirect to it.
    """
    try:
        url = checkout.create_portal_session(current_user, f"{current_app.config['PUBLIC_URL']}/billing")
    except LookupError as exc:
        flash(str(exc), "error")
        return redirect(url_for("billing.overview"))
    except BillingAPIError:
        flash("The billing portal is not reachable right now. Try again in a minute.", "error")
        return redirect(url_for("billing.overview"))
    return redirect(url, code=303)


@bp.post("/services/<int:service_id>/change-plan")
@login_required
def change_plan(service_id):
    """POST: move a paid service to another paid plan of the same backend (prorated in Stripe; the
    backend's change_plan runs when Stripe's event arrives).
    """
    service = own_service(service_id)
    plan = Plan.by_slug(request.form.get("plan") or "")
    back = request.form.get("next") == "service"
    target = url_for("customer.service", service_id=service.id) if back else url_for("billing.overview")
    if plan is None:
        flash("Choose a plan.", "error")
        return redirect(target)
    try:
        checkout.change_plan(service, plan, actor=f"customer:{current_user.email}")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Plan change to {plan.name} requested; it applies once Stripe confirms it.", "success")
    return redirect(target)

"""The customer's billing pages (blueprint ``billing``): overview, billing profile, customer portal,
plan change.

The blueprint is registered with or without Stripe: ``/billing`` (our own invoices, their PDFs and
the billing profile) serves a pay-by-invoice account on a panel without Stripe keys; the Stripe
routes (``STRIPE_ONLY``) answer 404 until Stripe is configured.

* ``GET /billing`` (``billing.overview``): per paid service its plan, price, subscription
  status, next renewal or end date, notices; the last invoices with links to Stripe's hosted
  invoice pages; the "Manage billing" button and the change-plan forms (with Stripe); our own
  invoices with their PDFs; the billing profile form.
* ``POST /billing/profile``: the customer saves their billing profile (``BillingProfileForm``;
  audited as ``account.billing_profile``).
* ``POST /billing/portal``: makes a Stripe customer portal session on click and redirects (303).
* ``POST /billing/services/<id>/change-plan``: moves the service to another plan of the same
  backend on a term (prorated in Stripe; free -> paid goes through Checkout; paid -> free at the
  end of the paid period).
* ``POST /billing/services/<id>/addons``: adds or removes add-ons on an active service.
"""
from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from panel.billing import changes, checkout
from panel.billing.models import BillingCustomer, BillingInvoice, Subscription
from panel.billing.stripe_api import BillingAPIError
from panel.customer.routes import own_service
from panel.extensions import db
from panel.models import Plan, Service

bp = Blueprint("billing", __name__, url_prefix="/billing")

#: Endpoints that talk to Stripe: 404 while Stripe is not configured.
STRIPE_ONLY = frozenset({"billing.portal", "billing.change_plan", "billing.addons"})


@bp.before_request
def _stripe_routes_need_stripe():
    from panel.billing import configured

    if request.endpoint in STRIPE_ONLY and not configured():
        abort(404)


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
    invoices and the portal button (with Stripe), our own invoices and the billing profile form.
    """
    from panel.billing.forms import BillingProfileForm

    return overview_page(BillingProfileForm(obj=current_user.profile))


def overview_page(profile_form, status: int = 200):
    """The ``/billing`` page with ``profile_form`` (a ``BillingProfileForm``, maybe with errors)."""
    from panel.billing import configured
    from panel.billing.invoice_routes import invoices_of
    from panel.billing.prices import format_money

    stripe = configured()
    items, invoices, has_customer = [], [], False
    if stripe:
        rows = db.session.execute(
            db.select(Service, Subscription).join(Subscription, Subscription.service_id == Service.id)
            .where(Service.user_id == current_user.id).order_by(Service.id.desc())).all()
        for service, sub in rows:
            price = sub.stripe_price or service.plan.stripe_price
            items.append({"service": service, "sub": sub, "price": format_price(price_info(price), price),
                          "options": changes.change_options(service)
                          if service.status == "active" and sub.deleted_at is None else []})
        invoices = db.session.scalars(db.select(BillingInvoice).where(BillingInvoice.user_id == current_user.id)
                                      .order_by(BillingInvoice.created.desc(), BillingInvoice.id.desc())
                                      .limit(12)).all()
        has_customer = db.session.scalar(db.select(BillingCustomer.id).where(
            BillingCustomer.user_id == current_user.id)) is not None
    from panel.billing import reminders
    from panel.models.base import utcnow

    html = render_template("billing/overview.html", items=items, invoices=invoices, has_customer=has_customer,
                           stripe=stripe, own_invoices=invoices_of(current_user.id), profile_form=profile_form,
                           profile=current_user.profile, invoiced=invoiced_services(current_user.id),
                           today=utcnow().date(), reminder_days=reminders.steps(),
                           format_money=lambda cents, cur: format_money(cents or 0, cur or "usd"))
    return html, status


def invoiced_services(user_id: int) -> list[Service]:
    """The account's live services billed by invoice (``billing_mode == "invoice"``), set by an operator."""
    return db.session.scalars(db.select(Service).where(
        Service.user_id == user_id, Service.billing_mode == "invoice",
        Service.status.not_in(("terminated", "cancelled"))).order_by(Service.id)).all()


@bp.post("/profile")
@login_required
def profile():
    """POST /billing/profile: save the customer's billing profile (``BillingProfileForm``: legal
    name, contact, address, country, VAT ID, reminder e-mails). Bad input (or a missing CSRF token)
    is answered 400 with the page and each field's message, and nothing is stored. The operator's
    switches (pay by invoice, auto-invoice, automatic reminders) are not taken from the form.
    Audited as ``account.billing_profile`` with the fields before and after."""
    from panel import audit
    from panel.billing.forms import BILLING_FIELDS, BillingProfileForm
    from panel.models import Profile

    form = BillingProfileForm()
    if not form.validate_on_submit():
        return overview_page(form, 400)
    row = current_user.profile
    if row is None:
        row = Profile(user_id=current_user.id)
        db.session.add(row)
    before = {name: getattr(row, name) or "" for name in BILLING_FIELDS}
    before["reminder_emails"] = row.reminder_emails is not False
    for name in BILLING_FIELDS:
        value = (getattr(form, name).data or "").strip()
        setattr(row, name, value.upper() if name == "country" else value)
    row.reminder_emails = bool(form.reminder_emails.data)
    after = {name: getattr(row, name) or "" for name in BILLING_FIELDS} | {"reminder_emails": row.reminder_emails}
    changed = sorted(k for k in after if after[k] != before[k])
    if changed:
        audit.record(current_user, "account.billing_profile", ("user", current_user.id),
                     before={k: before[k] for k in changed}, after={k: after[k] for k in changed})
    db.session.commit()
    flash(_("Billing profile saved."), "success")
    return redirect(url_for("billing.overview") + "#billing-profile", code=303)


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
    """POST ``plan`` (slug) and ``term``: move the service to that plan (``changes.change_plan``):
    prorated in Stripe, through Checkout for a free service, at period end down to a free plan."""
    service = own_service(service_id)
    slug, _, term = (request.form.get("plan") or "").partition(":")  # "plan" or "plan:term"
    plan = Plan.by_slug(slug)
    term = request.form.get("term") or term or None
    back = request.form.get("next") == "service"
    target = url_for("customer.service", service_id=service.id) if back else url_for("billing.overview")
    if plan is None:
        flash("Choose a plan.", "error")
        return redirect(target)
    try:
        result = changes.change_plan(service, plan, term=term, actor=f"customer:{current_user.email}")
    except changes.ChangeError as exc:
        flash(str(exc), "error")
        return redirect(target)
    if result.get("checkout_url"):
        return redirect(result["checkout_url"], code=303)
    flash(result["message"], "success")
    return redirect(target)


@bp.post("/services/<int:service_id>/addons")
@login_required
def addons(service_id):
    """POST ``add`` / ``remove`` (add-on slugs, repeatable): change the add-ons of an active service
    (``changes.change_addons``)."""
    service = own_service(service_id)
    try:
        message = changes.change_addons(service, request.form.getlist("add"), request.form.getlist("remove"),
                                        actor=f"customer:{current_user.email}")
    except changes.ChangeError as exc:
        flash(str(exc), "error")
    else:
        flash(message, "success")
    return redirect(url_for("customer.service", service_id=service.id))


def service_billing(service: Service) -> dict:
    """What the service page shows about billing (templates call it): ``mode``, ``term`` (words),
    the add-ons it has (``rows``) and can add (``addable``: ``(addon, offer or None)``), the plans it
    can move to with their offers per term (``options``), and failed billing tasks (operators)."""
    from panel import addons as addon_state
    from panel import storefront
    from panel.billing.models import BillingTask
    from panel.billing.prices import offer, term_words

    if service is None or not getattr(service, "id", None):
        return {}
    wanted = {row.addon.slug for row in addon_state.wanted(service)}
    taken = {row.addon.slug for row in service.addons}
    addable = []
    for addon in storefront.addons_of(service.plan):
        if addon.slug in taken:
            continue
        if addon.is_free:
            addable.append((addon, None))
        elif service.billing_mode in ("stripe", "invoice") and addon.price_for(service.term):
            found = offer(addon.price_for(service.term), service.term)
            if found is not None or service.billing_mode == "invoice":
                addable.append((addon, found))
    rows = [(row, offer(row.price_id, row.term) if row.price_id else None) for row in service.addons]
    options = []  # (value "slug[:term]", label) of every plan and term the service can move to
    paying = service.billing_mode == "stripe" and changes.live_subscription(service) is not None
    if service.status == "active":
        for plan in [service.plan] + changes.change_options(service):
            if plan.is_free:
                if plan.id != service.plan_id:
                    options.append((plan.slug, f"{plan.name} (free)"))
                continue
            for term, found in storefront.offers_of(plan).items():
                if plan.id == service.plan_id and term == service.term and (paying or service.billing_mode == "invoice"):
                    continue
                label = f"{plan.name}, {term_words(term).lower()}: {found['display']}"
                if plan.id == service.plan_id and not paying:
                    label = f"Pay for {plan.name}, {term_words(term).lower()}: {found['display']}"
                options.append((f"{plan.slug}:{term}", label))
    failed = db.session.scalars(db.select(BillingTask).where(BillingTask.service_id == service.id)
                                .order_by(BillingTask.id.desc()).limit(20)).all()
    return {"mode": service.billing_mode, "term": term_words(service.term) if service.term else None,
            "rows": rows, "wanted": wanted, "addable": addable, "options": options, "tasks": failed,
            "term_words": term_words, "usage": usage_so_far(service)}


def usage_so_far(service: Service) -> list[dict]:
    """The service's metered usage this calendar month (UTC) with its charge so far: ``[{"metric",
    "used", "free", "unit_price" (Decimal), "currency", "amount" (minor units)}]``; ``[]`` for a plan
    without metered prices."""
    from decimal import Decimal

    from panel.billing import invoicing
    from panel.models.base import utcnow

    rates = invoicing.metered_rates(service.plan)
    if not rates:
        return []
    today = utcnow().date()
    days = invoicing.service_days(service, today.replace(day=1), today)
    lines = {line.unit: line for line in invoicing.metered_lines(service, today.replace(day=1), today, days)}
    used = invoicing.metered_usage(service, today.replace(day=1), today, rates, days)
    return [{"metric": metric, "used": used.get(metric, Decimal(0)), "free": rate["free"],
             "unit_price": rate["unit_price"], "currency": rate["currency"],
             "amount": lines[metric].amount if metric in lines else 0} for metric, rate in rates.items()]

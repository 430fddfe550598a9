"""Billing (Stripe). Until Stripe is configured, paid plans cannot be ordered.

Paid plans are bought through Stripe Checkout, and Stripe's events drive each service's
lifecycle (provision, suspend for non-payment, unsuspend, change plan, terminate after
cancellation). Modules:

* ``settings``: ``PANEL_STRIPE_*`` and the dunning / retention periods.
* ``stripe_api``: the ``StripeClient`` and error mapping; ``checkout``: customer, checkout
  session, cancel at period end, plan change, customer portal.
* ``webhook``: ``POST /stripe/webhook``; ``handlers``: the event job (work kind ``stripe``);
  ``cron``: periodic work (run by ``panel worker`` every minute).
* ``models``: ``billing_customers``, ``subscriptions``, ``stripe_events``, ``billing_invoices``.
* ``prices``: the Stripe price/product cache (``price.*``/``product.*`` events, ``panel stripe
  sync``) and money formatting (Babel).
* ``routes``: the customer's billing page; ``cli``: ``panel stripe check|sync``, ``panel cron`` and
  ``panel invoices generate``.
* ``invoicing``: our own invoices (the month's lines from the database, VAT, gapless numbers, paid,
  void, credit notes); ``invoice_pdf``: their PDF (WeasyPrint); ``invoice_routes``: the customer's PDF
  download; ``reminders``: monthly invoices and reminders for overdue ones (``panel worker``);
  ``metering``: billable usage records and their report to Stripe Billing Meters.
"""
from __future__ import annotations


def init_app(app) -> None:
    """Load billing settings (raises ``panel.config.ConfigError``), register the tables, the
    CLI commands (``panel stripe check``, ``panel cron``, ``panel invoices``), the ``/billing``
    pages (with or without Stripe: our own invoices and the billing profile) and, when Stripe is
    configured, the ``stripe`` work kind and the billing cron with the dispatcher, the webhook
    blueprint (CSRF-exempt) and the template helpers."""
    from panel.billing import models  # noqa: F401  (register tables)
    from panel.billing import prices  # noqa: F401  (price.* and product.* handlers)
    from panel.billing import settings
    from panel.billing.cli import cron_command, stripe_group

    settings.load(app)
    app.cli.add_command(stripe_group)
    app.cli.add_command(cron_command)
    from panel.billing.cli import invoices_group
    from panel.billing.invoice_routes import bp as invoices_bp

    from panel.billing import reminders

    app.cli.add_command(invoices_group)
    app.register_blueprint(invoices_bp)  # our own invoices work with or without Stripe
    from panel.billing.routes import bp

    app.register_blueprint(bp)  # /billing too (our invoices, the profile); its Stripe routes 404 without Stripe
    app.context_processor(lambda: {"billing_in_nav": billing_in_nav})
    reminders.register(app)
    app.extensions["panel"].pm.register(UsageHook(), name="panel.billing.usage")
    if not configured(app):
        return

    from panel import dispatch
    from panel.billing import cron, handlers, tasks

    handlers.register(app)  # stored Stripe events are durable work of kind "stripe"
    dispatch.register_periodic(app, "billing-cron", app.config["BILLING_CRON_INTERVAL"], cron.run)
    tasks.register(app)  # Stripe calls that change a charge are durable work of kind "billing"
    app.extensions["panel"].pm.register(StatusHook(), name="panel.billing")

    from panel.billing.routes import billing_for, format_price, price_info
    from panel.billing.webhook import bp as webhook_bp
    from panel.extensions import csrf

    app.register_blueprint(webhook_bp)
    csrf.exempt(webhook_bp)
    from panel.extensions import limiter

    limiter.exempt(webhook_bp)  # Stripe's deliveries are not rate limited (nor spend time on it)
    if hasattr(app, "bare"):  # panel.app.PanelFlask: none of the pages' request hooks (issue 14)
        app.bare("stripe_webhook.webhook")

    @app.context_processor
    def billing_helpers():
        from panel.billing.changes import change_options
        from panel.billing.metering import usage_records_of
        from panel.billing.projection import projected_charge
        from panel.billing.routes import service_billing

        return {"billing_for": billing_for, "billing_price": lambda p: format_price(price_info(p), p),
                "billing_plan_options": change_options, "service_billing": service_billing,
                "usage_records_of": usage_records_of, "projected_charge": projected_charge}


class StatusHook:
    """Billing's ``service_status_changed`` hook: whoever ends a service, its charge stops
    (``changes.on_status_changed``)."""

    from panel.hookspecs import hookimpl

    @hookimpl
    def service_status_changed(self, service, old, new):
        from panel.billing.changes import on_status_changed

        on_status_changed(service.id, old, new)


class UsageHook:
    """Billing's ``usage_sampled`` hook: a metered plan's samples become usage records (and, for a
    Stripe-billed service, a meter report task): ``metering.record_usage``."""

    from panel.hookspecs import hookimpl

    @hookimpl
    def usage_sampled(self, service, metrics, at):
        from panel.billing.metering import record_usage

        record_usage(service, metrics, at)


def billing_in_nav() -> bool:
    """Whether the signed-in account's menu links to ``/billing``: always with Stripe; without it,
    only for an account that has invoices of our own or a service billed by invoice (once per
    request)."""
    from flask import g
    from flask_login import current_user

    if configured():
        return True
    if not getattr(current_user, "is_authenticated", False):
        return False
    if "billing_in_nav" not in g:
        from panel.extensions import db
        from panel.models import Invoice, Service

        g.billing_in_nav = bool(
            db.session.scalar(db.select(Service.id).where(Service.user_id == current_user.id,
                                                          Service.billing_mode == "invoice").limit(1))
            or db.session.scalar(db.select(Invoice.id).where(Invoice.user_id == current_user.id).limit(1)))
    return g.billing_in_nav


def configured(app=None) -> bool:
    """Whether Stripe billing is configured (``PANEL_STRIPE_SECRET_KEY`` set)."""
    from flask import current_app

    return bool((app or current_app).config.get("STRIPE_SECRET_KEY"))


def start_checkout(user, plan, params, *, actor, claim_key=None, term=None, addons=(), record_with=None):
    """Record a paid order and open its Stripe checkout session (one line item per price); see
    ``checkout.start_checkout``.

    Returns ``panel.orders.OrderResult(service, checkout_url)``; raises ``panel.orders.OrderError``.
    """
    from panel.billing.checkout import start_checkout as start

    return start(user, plan, params, actor=actor, claim_key=claim_key, term=term, addons=addons,
                 record_with=record_with)


def account_is_complimentary(user) -> bool:
    """Whether an operator made ``user``'s account complimentary (its paid plans are given without
    a subscription: seed 003's plankowner)."""
    from panel.billing.models import AccountBilling
    from panel.extensions import db

    if user is None or not getattr(user, "id", None):
        return False
    row = db.session.get(AccountBilling, user.id)
    return bool(row and row.complimentary)


def price_snapshot(price_id: str | None) -> tuple[int | None, str | None]:
    """``(unit_amount, currency)`` of a Stripe price from the cache (minor units, ISO code), or
    ``(None, None)`` when unknown or free. Reads Stripe once for a price never cached."""
    if not price_id:
        return None, None
    from panel.billing.prices import cached

    row = cached(price_id, fetch=configured())
    return (row.unit_amount, row.currency) if row is not None else (None, None)


def checkout_url(service):
    """The URL of the service's open checkout session (``None`` when there is none, or Stripe is
    unreachable); see ``checkout.checkout_url``."""
    from panel.billing.checkout import checkout_url as url

    return url(service)


def cancel_at_period_end(service, *, actor):
    """Cancel the service's subscription at the end of the paid period (a billing task); see
    ``changes.cancel``. Returns a sentence; raises ``panel.lifecycle.LifecycleError``."""
    from panel.billing.changes import cancel

    return cancel(service, actor=actor, at_period_end=True)


def change_plan(service, plan, *, actor, term=None):
    """Move the service to ``plan`` on ``term``; see ``changes.change_plan``. Returns ``{"message",
    "checkout_url"}``; raises ``changes.ChangeError``."""
    from panel.billing.changes import change_plan as change

    return change(service, plan, term=term, actor=actor)

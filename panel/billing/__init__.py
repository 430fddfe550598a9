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
* ``routes``: the customer's billing page; ``cli``: ``panel stripe check`` and ``panel cron``.
"""
from __future__ import annotations


def init_app(app) -> None:
    """Load billing settings (raises ``panel.config.ConfigError``), register the tables, the
    CLI commands (``panel stripe check``, ``panel cron``) and, when Stripe is configured, the
    ``stripe`` work kind and the billing cron with the dispatcher, the webhook and billing
    blueprints (webhook CSRF-exempt) and the template helpers."""
    from panel.billing import models  # noqa: F401  (register tables)
    from panel.billing import settings
    from panel.billing.cli import cron_command, stripe_group

    settings.load(app)
    app.cli.add_command(stripe_group)
    app.cli.add_command(cron_command)
    if not configured(app):
        return

    from panel import dispatch
    from panel.billing import cron, handlers

    handlers.register(app)  # stored Stripe events are durable work of kind "stripe"
    dispatch.register_periodic(app, "billing-cron", app.config["BILLING_CRON_INTERVAL"], cron.run)

    from panel.billing.routes import billing_for, bp, format_price, price_info
    from panel.billing.webhook import bp as webhook_bp
    from panel.extensions import csrf

    app.register_blueprint(webhook_bp)
    csrf.exempt(webhook_bp)
    from panel.extensions import limiter

    limiter.exempt(webhook_bp)  # Stripe's deliveries are not rate limited (nor spend time on it)
    app.register_blueprint(bp)

    @app.context_processor
    def billing_helpers():
        from panel.billing.checkout import change_plan_options

        return {"billing_for": billing_for, "billing_price": lambda p: format_price(price_info(p), p),
                "billing_plan_options": change_plan_options}


def configured(app=None) -> bool:
    """Whether Stripe billing is configured (``PANEL_STRIPE_SECRET_KEY`` set)."""
    from flask import current_app

    return bool((app or current_app).config.get("STRIPE_SECRET_KEY"))


def start_checkout(user, plan, params, *, actor, claim_key=None, record_with=None):
    """Record a paid order and open its Stripe checkout session; see ``checkout.start_checkout``.

    Returns ``panel.orders.OrderResult(service, checkout_url)``; raises ``panel.orders.OrderError``.
    """
    from panel.billing.checkout import start_checkout as start

    return start(user, plan, params, actor=actor, claim_key=claim_key, record_with=record_with)


def checkout_url(service):
    """The URL of the service's open checkout session (``None`` when there is none, or Stripe is
    unreachable); see ``checkout.checkout_url``."""
    from panel.billing.checkout import checkout_url as url

    return url(service)


def cancel_at_period_end(service, *, actor):
    """Cancel the service's subscription at the end of the paid period; see
    ``checkout.cancel_at_period_end``. Raises ``panel.lifecycle.LifecycleError``."""
    from panel.billing.checkout import cancel_at_period_end as cancel

    return cancel(service, actor=actor)


def change_plan(service, plan, *, actor):
    """Move the service's subscription to ``plan`` (prorated); see ``checkout.change_plan``."""
    from panel.billing.checkout import change_plan as change

    return change(service, plan, actor=actor)

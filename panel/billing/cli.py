"""``panel stripe check`` and ``panel cron`` (registered on ``app.cli`` by ``init_app``)."""
from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

stripe_group = AppGroup("stripe", help="Stripe billing: check the catalog's prices against Stripe.")


def price_problems() -> list[tuple[str, str, str]]:
    """``(plan slug, price id, problem)`` for every active paid plan whose Stripe price does not
    exist, is inactive, or is not recurring (Stripe ``GET /v1/prices/{id}``).

    Raises ``BillingAPIError`` when Stripe cannot be asked (unreachable, key refused).
    """
    from panel.billing import stripe_api
    from panel.billing.stripe_api import BillingAPIError
    from panel.extensions import db
    from panel.models import Plan

    client = stripe_api.client()
    problems = []
    plans = db.session.scalars(db.select(Plan).where(Plan.active.is_(True)).order_by(Plan.sort_order, Plan.id))
    for plan in plans:
        if plan.is_free:
            continue
        try:
            price = stripe_api.call("read the price", client.v1.prices.retrieve, plan.stripe_price)
        except BillingAPIError as exc:
            if exc.status == 404 or exc.code == "resource_missing":
                problems.append((plan.slug, plan.stripe_price, "does not exist in Stripe"))
                continue
            raise
        if not price.get("active", False):
            problems.append((plan.slug, plan.stripe_price, "is inactive in Stripe"))
        elif price.get("type") != "recurring" or not price.get("recurring"):
            problems.append((plan.slug, plan.stripe_price, "is not recurring (a subscription needs a recurring price)"))
    return problems


@stripe_group.command("check")
@with_appcontext
def stripe_check():
    """List active paid plans whose Stripe price is missing, inactive or not recurring (exit 1)."""
    from panel import billing
    from panel.billing.stripe_api import BillingAPIError

    if not billing.configured():
        raise click.ClickException("PANEL_STRIPE_SECRET_KEY is not set: billing is off")
    try:
        problems = price_problems()
    except BillingAPIError as exc:
        raise click.ClickException(str(exc))
    for slug, price, problem in problems:
        click.echo(f"{slug}: price {price} {problem}")
    if problems:
        click.echo(f"{len(problems)} plan(s) cannot be sold until their price is fixed", err=True)
        sys.exit(1)
    click.echo("every active paid plan has an active recurring Stripe price")


@click.command("cron")
@with_appcontext
def cron_command():
    """Run periodic billing work once: recover paid checkouts whose event never came, expire
    unpaid orders, suspend after grace, terminate after retention (workers do it every minute)."""
    from panel import dispatch
    from panel.billing import cron

    report = cron.run()
    for line in report.lines():
        click.echo(line)
    if not current_app.config.get("REDIS_URL"):
        dispatch.inprocess_runner().wait_idle(300)
    if report.problems:
        sys.exit(1)

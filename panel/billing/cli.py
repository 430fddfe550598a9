"""``panel stripe check``, ``panel stripe sync`` and ``panel cron`` (registered on ``app.cli`` by
``init_app``)."""
from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

stripe_group = AppGroup("stripe", help="Stripe billing: check the catalog's prices against Stripe, refresh the price cache.")


def _problem(price: dict, term: str) -> str | None:
    """Why a Stripe Price object cannot be sold on ``term`` (``None``: it can)."""
    from panel.models.catalog import TERMS, term_of

    recurring = price.get("recurring") or {}
    if not price.get("active", False):
        return "is inactive in Stripe"
    if price.get("type") != "recurring" or not recurring:
        return "is not recurring (a subscription needs a recurring price)"
    if (recurring.get("usage_type") or "licensed") != "licensed":
        return "is metered (a plan or add-on needs a licensed price)"
    if price.get("unit_amount") is None:
        return "has no unit_amount (tiered or custom prices are not supported)"
    interval, count = recurring.get("interval"), int(recurring.get("interval_count") or 1)
    if term_of(interval, count) != term:
        want = TERMS[term]
        return (f"is billed every {count} {interval}(s), but {term} means every {want[1]} {want[0]}(s)")
    return None


def price_problems() -> list[tuple[str, str, str]]:
    """``(item, price id, problem)`` for every price of an active plan or add-on that cannot be
    sold: it does not exist, is inactive, is not recurring or licensed, its interval does not
    match its term (``quarterly`` must be month x3...), or its currency differs from the plan's
    price on the same term (a subscription's items share one currency). ``item`` is the plan
    slug, or ``addon <slug>``. Stripe ``GET /v1/prices/{id}``; each answer refreshes the price cache.

    Raises ``BillingAPIError`` when Stripe cannot be asked (unreachable, key refused).
    """
    from panel.billing import stripe_api
    from panel.billing.prices import store_price
    from panel.storefront import addons_of
    from panel.billing.stripe_api import BillingAPIError
    from panel.extensions import db
    from panel.models import Addon, Plan

    client = stripe_api.client()
    problems: list[tuple[str, str, str]] = []
    seen: dict[str, dict | None] = {}

    def read(price_id: str) -> dict | None:
        if price_id not in seen:
            try:
                seen[price_id] = stripe_api.call("read the price", client.v1.prices.retrieve, price_id)
                store_price(seen[price_id])
            except BillingAPIError as exc:
                if exc.status == 404 or exc.code == "resource_missing":
                    seen[price_id] = None
                else:
                    raise
        return seen[price_id]

    def check(label: str, price_id: str, term: str) -> dict | None:
        price = read(price_id)
        if price is None:
            problems.append((label, price_id, "does not exist in Stripe"))
            return None
        problem = _problem(price, term)
        if problem:
            problems.append((label, price_id, problem))
            return None
        return price

    plans = db.session.scalars(db.select(Plan).where(Plan.active.is_(True)).order_by(Plan.sort_order, Plan.id)).all()
    for plan in plans:
        currencies = {}
        for term, price_id in plan.term_prices.items():
            price = check(plan.slug, price_id, term)
            if price is not None:
                currencies[term] = price.get("currency")
        for addon in addons_of(plan):
            for term, price_id in addon.term_prices.items():
                price = read(price_id)
                if price is not None and term in currencies and price.get("currency") != currencies[term]:
                    problems.append((f"addon {addon.slug}", price_id,
                                     f"is in {str(price.get('currency')).upper()}, but plan {plan.slug}'s {term} "
                                     f"price is in {str(currencies[term]).upper()}"))
    addons = db.session.scalars(db.select(Addon).where(Addon.active.is_(True)).order_by(Addon.sort_order, Addon.id))
    for addon in addons:
        for term, price_id in addon.term_prices.items():
            check(f"addon {addon.slug}", price_id, term)
    db.session.commit()
    return problems


def meter_problems() -> list[tuple[str, str, str]]:
    """``[(plan slug, metric, problem)]`` for active plans' metered metrics that cannot bill:

    * the ``meter`` (a Stripe meter's ``event_name``) is missing or inactive (``GET
      /v1/billing/meters``);
    * the metered ``price`` is missing (``GET /v1/prices/{id}``), inactive, not recurring, not
      ``recurring.usage_type=metered``, tied to no meter or to a meter that is missing or
      inactive, tied to another meter than the metric's ``meter``, in another currency than the
      metric's ``currency``, at another per-unit amount than its ``unit_price``, or billed on an interval none of the plan's terms has (a
      subscription's items share one interval);
    * a ``price`` without a ``meter``: nothing would ever be reported to it.

    Each price read refreshes the price cache. Raises ``BillingAPIError``."""
    from panel.billing import stripe_api
    from panel.billing.invoicing import metered_rates
    from panel.billing.prices import store_price
    from panel.billing.stripe_api import BillingAPIError
    from panel.extensions import db
    from panel.models import Plan

    plans = db.session.scalars(db.select(Plan).where(Plan.active.is_(True)).order_by(Plan.sort_order, Plan.id)).all()
    wanted = [(plan, metric, rate) for plan in plans for metric, rate in metered_rates(plan).items()
              if rate.get("meter") or rate.get("price")]
    if not wanted:
        return []
    client = stripe_api.client()
    by_name, by_id = {}, {}
    listing = stripe_api.call("list the billing meters", client.v1.billing.meters.list, params={"limit": 100})
    for meter in listing.get("data", []):  # one page of 100: more meters than plans' metrics is unusual
        by_name[meter["event_name"]] = meter
        by_id[meter["id"]] = meter
    out = []
    for plan, metric, rate in wanted:
        name = rate.get("meter")
        if name:
            meter = by_name.get(name)
            if meter is None:
                out.append((plan.slug, metric, f"no Stripe meter has event_name {name}"))
            elif meter.get("status") != "active":
                out.append((plan.slug, metric, f"the Stripe meter {meter['id']} for {name} is {meter.get('status')}"))
        price_id = rate.get("price")
        if not price_id:
            continue
        if not name:
            out.append((plan.slug, metric, f"price {price_id} has no meter: name the meter's event_name in "
                                           "metered.<metric>.meter, or usage is never reported to Stripe"))
        try:
            price = stripe_api.call("read the metered price", client.v1.prices.retrieve, price_id)
            store_price(price)
        except BillingAPIError as exc:
            if exc.status == 404 or exc.code == "resource_missing":
                out.append((plan.slug, metric, f"price {price_id} does not exist in Stripe"))
                continue
            raise
        problem = _metered_problem(price, rate, by_id, plan)
        if problem:
            out.append((plan.slug, metric, f"price {price_id} {problem}"))
    db.session.commit()
    return out


def _metered_problem(price: dict, rate: dict, meters: dict, plan) -> str | None:
    """Why a Stripe Price cannot be the metered price of ``rate`` on ``plan`` (``None``: it can);
    ``meters``: ``{meter id: meter}``."""
    from panel.models.catalog import term_of

    recurring = price.get("recurring") or {}
    if not price.get("active", False):
        return "is inactive in Stripe"
    if price.get("type") != "recurring" or not recurring:
        return "is not recurring (a metered price is a recurring price)"
    if recurring.get("usage_type") != "metered":
        return "is not metered (it needs recurring.usage_type=metered)"
    meter_id = recurring.get("meter")
    meter = meters.get(meter_id) if meter_id else None
    if not meter_id:
        return "is tied to no Stripe meter (recurring.meter)"
    if meter is None:
        return f"is tied to meter {meter_id}, which does not exist"
    if meter.get("status") != "active":
        return f"is tied to meter {meter_id}, which is {meter.get('status')}"
    if rate.get("meter") and meter.get("event_name") != rate["meter"]:
        return (f"is tied to meter {meter_id} (event_name {meter.get('event_name')}), but the usage is "
                f"reported to event_name {rate['meter']}")
    if str(price.get("currency", "")).lower() != rate["currency"]:
        return f"is in {str(price.get('currency')).upper()}, but the metric is priced in {rate['currency'].upper()}"
    exact = price.get("unit_amount_decimal")
    if exact is None and price.get("unit_amount") is not None:
        exact = price["unit_amount"]
    if exact is not None:
        from decimal import Decimal

        from panel.billing.prices import minor_exponent

        per_unit = Decimal(str(exact)).scaleb(-minor_exponent(rate["currency"]))
        if per_unit != rate["unit_price"]:
            return (f"charges {format(per_unit.normalize(), 'f')} per unit, but the catalog's unit_price is "
                    f"{format(rate['unit_price'].normalize(), 'f')} (our invoices and usage figures use it)")
    term = term_of(recurring.get("interval"), recurring.get("interval_count"))
    if term not in plan.term_prices:
        return (f"is billed every {recurring.get('interval_count') or 1} {recurring.get('interval')}(s), which "
                f"none of the plan's terms ({', '.join(sorted(plan.term_prices)) or 'none'}) is")
    return None


@stripe_group.command("check")
@with_appcontext
def stripe_check():
    """List active plans' and add-ons' prices that cannot be sold: missing, inactive, not
    recurring, an interval that does not match the term, a currency unlike the plan's; metered
    prices that are not metered or whose meter is missing or inactive (exit 1)."""
    from panel import billing
    from panel.billing.stripe_api import BillingAPIError

    if not billing.configured():
        raise click.ClickException("PANEL_STRIPE_SECRET_KEY is not set: billing is off")
    try:
        problems = price_problems()
        meters = meter_problems()
    except BillingAPIError as exc:
        raise click.ClickException(str(exc))
    for slug, price, problem in problems:
        click.echo(f"{slug}: price {price} {problem}")
    for slug, metric, problem in meters:
        click.echo(f"{slug}: metered {metric}: {problem}")
    problems = problems + meters
    if problems:
        click.echo(f"{len(problems)} price(s) cannot be sold until they are fixed", err=True)
        sys.exit(1)
    click.echo("every active plan and add-on has active recurring Stripe prices matching their terms, "
               "and every metered price's meter exists")


@stripe_group.command("sync")
@with_appcontext
def stripe_sync():
    """Refresh the local price cache from Stripe (every price, products included)."""
    from panel import billing
    from panel.billing.prices import sync
    from panel.billing.stripe_api import BillingAPIError

    if not billing.configured():
        raise click.ClickException("PANEL_STRIPE_SECRET_KEY is not set: billing is off")
    try:
        report = sync()
    except BillingAPIError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"cached {len(report.stored)} price(s)")
    for price_id in report.missing:
        click.echo(f"missing in Stripe: {price_id} (named by the catalog)", err=True)
    if report.missing:
        sys.exit(1)


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


invoices_group = AppGroup("invoices", help="Invoices of our own, for services paid by invoice.")


@invoices_group.command("generate")
@click.option("--month", required=True, help="the calendar month billed, e.g. 2026-11")
@click.option("--account", "email", default=None, help="only this account (email)")
@click.option("--dry-run", is_flag=True, help="print the lines and totals, issue nothing")
@with_appcontext
def invoices_generate(month, email, dry_run):
    """Compute (and unless --dry-run issue, with the next gapless number) the month's invoice of
    every account with a service billed by invoice, or of --account only."""
    from flask_babel import force_locale

    from panel import audit
    from panel.billing import invoicing
    from panel.i18n import money
    from panel.models.invoices import decimal_text

    try:
        result = invoicing.generate(month, email=email, dry_run=dry_run, actor="cli")
    except invoicing.InvoiceError as exc:
        raise click.ClickException(str(exc))
    with force_locale("en"):  # the command line has no request to take a language from
        for draft in result.drafts:
            click.echo(f"{draft.user.email} {draft.period_start:%Y-%m} {draft.currency.upper()}")
            for line in draft.lines:
                click.echo(f"  {line.description}: {decimal_text(line.quantity)} x {decimal_text(line.unit_price)} = "
                           f"{money(line.amount, line.currency)}")
            click.echo(f"  subtotal {money(draft.subtotal, draft.currency)}, VAT {draft.vat_rate} % "
                       f"{money(draft.vat, draft.currency)}, total {money(draft.total, draft.currency)}")
        for invoice in result.issued:
            audit.record("cli", "invoice.issue", invoice, after={"number": invoice.number, "total": invoice.total,
                                                                  "currency": invoice.currency})
            click.echo(f"issued {invoice.number} to {invoice.buyer.get('email')}: {money(invoice.total, invoice.currency)}")
    audit.commit()
    for line in result.skipped:
        click.echo(f"skipped: {line}", err=True)
    if not result.drafts:
        click.echo(f"nothing to invoice for {month}")

"""Our own invoices, for services paid by invoice (``billing_mode == "invoice"``): the bill of a
month computed from the database alone (seed 002), then issued with a gapless number.

Computation (``compute_month``), per service of the account:

* **Status timeline**: from the service event log (``service_events.to_status``, in order). A day
  (UTC) is *billable* when the service was ``active`` for any part of it (seed 002's day
  collapse). Days of the service's life in the month on which it was never active (suspended the
  whole day, e.g. for non-payment) are *suspended days* and are not billed.
* **Base fee**: the plan's monthly price (Stripe price cache: ``unit_amount`` minor units and
  ``currency``) prorated by billable days: ``fee * billable_days / days_in_month``.
* **Add-ons** (seed 002's packages): an add-on enabled for any part of a day counts that day
  (add-on event log, ``addon_events``), only on billable days; prorated like the base fee from the
  monthly price recorded on its ``enabled`` event.
* **Metered usage**: the plan's ``metered`` block (``{metric: {unit_price, currency, free,
  aggregate}}``, metrics the backend declares in ``billable_metrics``) over the month's usage
  records: ``aggregate`` ``sum`` (a counter, e.g. posts) or ``max`` (a level, e.g. storage in GiB);
  ``days`` (seed 002's package-days, e.g. Kubernetes ``package_days``) is counted from the add-on
  event log instead: per add-on without a price of its own, its days on billable days. Minus the
  ``free`` allowance; times ``unit_price`` (Decimal, major units per unit).

Rounding (documented, tested to the cent): each line's amount is rounded once to the currency's
minor unit, ``ROUND_HALF_UP``, from the exact fraction (never from a rounded unit price); the net
subtotal is the sum of the rounded lines; VAT is computed **once per invoice** on the net subtotal
(``subtotal * rate / 100``, ``ROUND_HALF_UP``), not per line, as Swiss VAT invoices state it.

VAT: ``PANEL_INVOICE_VAT_RATES`` maps the buyer's country to a rate in percent (default
``CH:8.10,LI:8.10``); a buyer in another EU country with a valid EU VAT ID (python-stdnum) pays
no VAT and the invoice notes the reverse charge; any other country uses its rate in the table or 0.

Language: an invoice is one document in one language, fixed when it is issued. The line texts
(and the reverse-charge note) are rendered with Flask-Babel in the account's language
(``User.locale``, else English) by ``compute_month`` and stored on the immutable invoice with that
``locale``; its PDF is rendered in the same ``locale``. Storing the rendered text (rather than a
message key rendered on each download) keeps what was issued exactly reproducible: a later change
of the account's language or of a translation never rewrites an issued invoice.

Numbering (``allocate_number``): ``YYYY-NNNNNN`` (credit notes ``CN-YYYY-NNNNNN``), from a counter
row per series and year locked ``FOR UPDATE`` inside the issuing transaction: concurrent issues
wait for each other, a rolled-back issue rolls its number back, so numbers never repeat or skip.
"""
from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from flask import current_app
from flask_babel import force_locale, gettext
from flask_babel import lazy_gettext as _l

from panel.billing.prices import minor_exponent
from panel.extensions import db
from panel.models import AddonEvent, Service, ServiceEvent, User
from panel.models.base import utcnow
from panel.models.invoices import CreditNote, Invoice, InvoiceCounter, InvoiceLine, UsageRecord, decimal_text

DEFAULT_VAT_RATES = "CH:8.10,LI:8.10"
EU_COUNTRIES = frozenset("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split())
REVERSE_CHARGE = "Reverse charge: VAT to be accounted for by the recipient (Art. 196 Directive 2006/112/EC)."
#: Texts that reach ``gettext`` as values, listed for the catalog (``pybabel extract``): the
#: reverse-charge note and the labels of the shipped backends' billable metrics.
_MESSAGES = (_l("Reverse charge: VAT to be accounted for by the recipient (Art. 196 Directive 2006/112/EC)."),
             _l("Posts"), _l("Storage"), _l("Package-days"))
SERIES_PREFIX = {"invoice": "", "credit_note": "CN-"}


class InvoiceError(ValueError):
    """A request the invoicing code refuses (bad month, unknown account, bad amount); the message
    is for the operator."""


# --------------------------------------------------------------------------- money and rounding

def round_minor(value: Decimal) -> int:
    """An exact amount in minor units (``Decimal``) rounded to a whole minor unit, ROUND_HALF_UP."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def major_to_minor(amount: Decimal, currency: str) -> Decimal:
    """``amount`` in major units (``Decimal("0.01")`` USD) as exact minor units (``Decimal(1)``)."""
    return amount.scaleb(minor_exponent(currency))


def vat_amount(subtotal: int, rate: Decimal) -> int:
    """VAT in minor units on a net ``subtotal`` (minor units) at ``rate`` percent, rounded half up
    once per invoice: ``vat_amount(1859, Decimal("8.10")) == 151``."""
    return round_minor(Decimal(subtotal) * rate / Decimal(100))


# --------------------------------------------------------------------------- periods and days

def month_bounds(month: str) -> tuple[date, date]:
    """``"2026-11"`` -> ``(date(2026, 11, 1), date(2026, 11, 30))``; raises ``InvoiceError``."""
    try:
        year, mon = (int(p) for p in month.split("-"))
        first = date(year, mon, 1)
    except (ValueError, AttributeError):
        raise InvoiceError(f"month must look like 2026-11 (got {month!r})") from None
    return first, date(year, mon, calendar.monthrange(year, mon)[1])


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def days_touched(intervals, first: date, last: date) -> set[date]:
    """The UTC days from ``first`` to ``last`` (inclusive) that any ``(start, end)`` interval
    (aware datetimes, ``end`` exclusive, ``None`` = still open) overlaps for any part: seed 002's
    day collapse."""
    days: set[date] = set()
    window_end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=timezone.utc)
    for start, end in intervals:
        start = _aware(start)
        end = window_end if end is None else min(_aware(end), window_end)
        day = max(start.date(), first)
        while day <= last and datetime.combine(day, time.min, tzinfo=timezone.utc) < end:
            days.add(day)
            day += timedelta(days=1)
    return days


def status_intervals(events, status: str = "active") -> list[tuple[datetime, datetime | None]]:
    """The intervals a service spent in ``status``, from its events' ``to_status`` in order
    (``[(start, end or None)]``)."""
    out: list[tuple[datetime, datetime | None]] = []
    since = None
    for ev in events:
        if ev.to_status is None:
            continue
        if ev.to_status == status and since is None:
            since = ev.at
        elif ev.to_status != status and since is not None:
            out.append((since, ev.at))
            since = None
    if since is not None:
        out.append((since, None))
    return out


def addon_intervals(events) -> dict[str, list[tuple[datetime, datetime | None, AddonEvent]]]:
    """``{addon slug: [(enabled at, disabled at or None, the enabled event)]}`` from add-on events."""
    out: dict[str, list] = defaultdict(list)
    open_: dict[str, AddonEvent] = {}
    for ev in events:
        if ev.kind == "enabled" and ev.addon_slug not in open_:
            open_[ev.addon_slug] = ev
        elif ev.kind == "disabled" and ev.addon_slug in open_:
            started = open_.pop(ev.addon_slug)
            out[ev.addon_slug].append((started.at, ev.at, started))
    for slug, started in open_.items():
        out[slug].append((started.at, None, started))
    return out


# --------------------------------------------------------------------------- computation

@dataclass
class LineDraft:
    """An invoice line before it is stored (see ``InvoiceLine``)."""

    kind: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: int
    currency: str
    service_id: int | None = None


@dataclass
class InvoiceDraft:
    """The computed bill of one account, one month and one currency (amounts in minor units)."""

    user: User
    period_start: date
    period_end: date
    currency: str
    lines: list[LineDraft] = field(default_factory=list)
    vat_rate: Decimal = Decimal("0")
    vat_note: str = ""
    locale: str = "en"

    @property
    def subtotal(self) -> int:
        """Sum of the lines' rounded amounts."""
        return sum(line.amount for line in self.lines)

    @property
    def vat(self) -> int:
        """VAT on the subtotal, rounded once (``vat_amount``)."""
        return vat_amount(self.subtotal, self.vat_rate)

    @property
    def total(self) -> int:
        """Subtotal plus VAT."""
        return self.subtotal + self.vat


def _prorated(monthly_minor: int, days: int, days_in_month: int) -> int:
    return round_minor(Decimal(monthly_minor) * days / days_in_month)


def _unit_price(monthly_minor: int, currency: str, days_in_month: int) -> Decimal:
    """The per-day price shown on a prorated line (major units, 6 places; the amount is computed
    from the exact fraction, not from this)."""
    per_day = Decimal(monthly_minor).scaleb(-minor_exponent(currency)) / days_in_month
    return per_day.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def _monthly_price(price_id: str | None) -> tuple[int | None, str | None]:
    from panel.billing import price_snapshot

    return price_snapshot(price_id)


@dataclass
class ServiceDays:
    """A service's days in a period: ``billable`` (UTC dates it was active for any part of),
    ``suspended`` (days of its life in the period on which it never was active), ``in_month``
    (days of the period) and its add-on events in order (``addon_events``)."""

    billable: set[date]
    suspended: int
    in_month: int
    addon_events: list


def service_days(service: Service, first: date, last: date, *, until: date | None = None) -> ServiceDays:
    """The billable and suspended days of ``service`` from ``first`` to ``last`` (from its event log);
    with ``until``, only the days up to that day (``in_month`` stays the whole period's)."""
    dim = (last - first).days + 1
    upto = min(until, last) if until else last
    events = db.session.scalars(db.select(ServiceEvent).where(ServiceEvent.service_id == service.id)
                                .order_by(ServiceEvent.at, ServiceEvent.id)).all()
    active = status_intervals(events)
    billable = days_touched(active, first, upto)
    if active:
        life_start = _aware(active[0][0])
        ended = [e.at for e in events if e.to_status in ("terminated", "cancelled")]
        life_end = _aware(ended[-1]) if ended and ended[-1] >= active[-1][0] else None
        life = days_touched([(life_start, life_end)], first, upto)
    else:
        life = set()
    addon_events = db.session.scalars(db.select(AddonEvent).where(AddonEvent.service_id == service.id)
                                      .order_by(AddonEvent.at, AddonEvent.id)).all()
    return ServiceDays(billable=billable, suspended=len(life - billable), in_month=dim, addon_events=addon_events)


def package_days(days: ServiceDays, first: date, last: date) -> Decimal:
    """Seed 002's package-days of a period (the ``days`` aggregate): per add-on (package) that has no
    price of its own (its ``enabled`` event carries no amount), the billable days on which it was
    enabled for any part of the day. Priced add-ons are billed on their own lines, never twice."""
    total = 0
    for _slug, spans in addon_intervals(days.addon_events).items():
        if any(ev.unit_amount for _, _, ev in spans):
            continue
        total += len(days_touched([(a, b) for a, b, _ in spans], first, last) & days.billable)
    return Decimal(total)


def service_lines(service: Service, first: date, last: date, *, until: date | None = None) -> list[LineDraft]:
    """The lines of one service for the period ``first``..``last`` (a calendar month); with
    ``until`` (a day of the period) only the days and usage up to that day count, prorated over
    the whole period (the month so far, ``panel.billing.projection``)."""
    upto = min(until, last) if until else last
    days = service_days(service, first, last, until=until)
    dim, billable, suspended = days.in_month, days.billable, days.suspended
    lines: list[LineDraft] = []
    name = service.name
    fee, currency = _monthly_price(service.plan.price_for("monthly") if service.plan else None)
    if fee and billable:
        words = {"plan": service.plan.name, "service": name, "days": len(billable), "month_days": dim}
        text = (gettext("%(plan)s: %(service)s (%(days)s of %(month_days)s days, %(suspended)s days suspended)",
                        suspended=suspended, **words) if suspended
                else gettext("%(plan)s: %(service)s (%(days)s of %(month_days)s days)", **words))
        lines.append(LineDraft(
            kind="base", service_id=service.id, currency=currency, description=text,
            quantity=Decimal(len(billable)), unit="day", unit_price=_unit_price(fee, currency, dim),
            amount=_prorated(fee, len(billable), dim)))
    for slug, spans in sorted(addon_intervals(days.addon_events).items()):
        touched = days_touched([(a, b) for a, b, _ in spans], first, upto) & billable
        priced = next((ev for _, _, ev in reversed(spans) if ev.unit_amount), None)
        if not touched or priced is None:
            continue
        lines.append(LineDraft(
            kind="addon", service_id=service.id, currency=priced.currency,
            description=gettext("Add-on %(addon)s: %(service)s (%(days)s of %(month_days)s days)",
                                addon=_addon_name(slug), service=name, days=len(touched), month_days=dim),
            quantity=Decimal(len(touched)), unit="day",
            unit_price=_unit_price(priced.unit_amount, priced.currency, dim),
            amount=_prorated(priced.unit_amount, len(touched), dim)))
    lines += metered_lines(service, first, upto, days)
    return lines


def _addon_name(slug: str) -> str:
    """The add-on's catalog name (``Addon.name``), or its slug when it is gone from the catalog."""
    from panel.models import Addon

    row = Addon.by_slug(slug)
    return row.name if row is not None and row.name else slug


def metric_label(service: Service, metric: str) -> str:
    """The words for ``metric`` on an invoice line, in the current language: the label the backend
    declares in ``billable_metrics`` (translated where the catalog has it), else the metric's name."""
    from panel.plugins import BackendNotConfigured, backend_class

    try:
        declared = (backend_class(service.backend).billable_metrics or {}).get(metric)
    except BackendNotConfigured:
        declared = None
    return gettext(declared.title) if declared is not None else metric


def metered_rates(plan) -> dict[str, dict]:
    """The plan's ``metered`` block, parsed: ``{metric: {"unit_price": Decimal, "currency",
    "free": Decimal, "aggregate": "sum"|"max", "meter", "price"}}``."""
    out = {}
    for metric, spec in ((plan.metered or {}) if plan is not None else {}).items():
        out[metric] = {"unit_price": Decimal(str(spec["unit_price"])), "currency": str(spec["currency"]).lower(),
                       "free": Decimal(str(spec.get("free") or 0)), "aggregate": spec.get("aggregate") or "sum",
                       "meter": spec.get("meter"), "price": spec.get("price")}
    return out


def usage_totals(service_id: int, start: datetime, end: datetime, rates: dict[str, dict]) -> dict[str, Decimal]:
    """``{metric: quantity}`` of a service's usage records whose period starts in ``[start, end)``,
    aggregated as each rate says (``sum`` or ``max``). Voided records and the correction records
    that void them are left out (``UsageRecord.cancels_id``)."""
    voided = db.select(UsageRecord.cancels_id).where(UsageRecord.cancels_id.is_not(None))
    rows = db.session.execute(db.select(UsageRecord.metric, UsageRecord.quantity).where(
        UsageRecord.service_id == service_id, UsageRecord.period_start >= start,
        UsageRecord.period_start < end, UsageRecord.cancels_id.is_(None),
        UsageRecord.id.not_in(voided))).all()
    totals: dict[str, Decimal] = {}
    for metric, quantity in rows:
        how = rates.get(metric, {}).get("aggregate", "sum")
        current = totals.get(metric)
        quantity = Decimal(quantity)
        totals[metric] = quantity if current is None else (max(current, quantity) if how == "max"
                                                           else current + quantity)
    return totals


def metered_usage(service: Service, first: date, last: date, rates: dict[str, dict],
                  days: ServiceDays | None = None) -> dict[str, Decimal]:
    """``{metric: quantity used}`` of ``service`` from ``first`` to ``last`` (dates, inclusive) for
    each of ``rates`` (``metered_rates``): usage records aggregated ``sum``/``max``; ``days``
    (package-days) counted from the add-on event log (``package_days``)."""
    start = datetime.combine(first, time.min, tzinfo=timezone.utc)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=timezone.utc)
    used = usage_totals(service.id, start, end, {m: r for m, r in rates.items() if r["aggregate"] != "days"})
    if any(r["aggregate"] == "days" for r in rates.values()):
        days = days or service_days(service, first, last)
        for metric, rate in rates.items():
            if rate["aggregate"] == "days":
                used[metric] = package_days(days, first, last)
    return used


def metered_lines(service: Service, first: date, last: date, days: ServiceDays | None = None) -> list[LineDraft]:
    """One line per metered metric of the service's plan with billable usage in the period: the
    quantity used (``metered_usage``) minus the ``free`` allowance, times ``unit_price``."""
    rates = metered_rates(service.plan)
    if not rates:
        return []
    totals = metered_usage(service, first, last, rates, days)
    lines = []
    for metric, rate in rates.items():
        used = totals.get(metric, Decimal(0))
        billable = max(Decimal(0), used - rate["free"])
        if billable <= 0:
            continue
        words = {"metric": metric_label(service, metric), "service": service.name, "used": decimal_text(used)}
        text = (gettext("%(metric)s: %(service)s (%(used)s used, %(free)s free)", free=decimal_text(rate["free"]),
                        **words) if rate["free"] else gettext("%(metric)s: %(service)s (%(used)s used)", **words))
        lines.append(LineDraft(
            kind="metered", service_id=service.id, currency=rate["currency"], description=text,
            quantity=billable, unit=metric, unit_price=rate["unit_price"],
            amount=round_minor(major_to_minor(billable * rate["unit_price"], rate["currency"]))))
    return lines


def vat_rates() -> dict[str, Decimal]:
    """``PANEL_INVOICE_VAT_RATES`` parsed: ``{"CH": Decimal("8.10"), ...}``."""
    text = str(current_app.config.get("INVOICE_VAT_RATES") or DEFAULT_VAT_RATES)
    out = {}
    for part in text.split(","):
        if ":" in part:
            country, rate = part.split(":", 1)
            out[country.strip().upper()] = Decimal(rate.strip())
    return out


def eu_vat_prefix(country: str) -> str:
    """The VAT number prefix of an EU country (ISO alpha-2): the code itself, ``EL`` for Greece."""
    return "EL" if country.upper() == "GR" else country.upper()


def vat_for(country: str, vat_id: str) -> tuple[Decimal, str]:
    """``(rate percent, note)`` for a buyer in ``country`` (ISO alpha-2) with ``vat_id``."""
    country = (country or "").upper()
    rates = vat_rates()
    if country in EU_COUNTRIES and vat_id and country not in rates:
        from stdnum.eu import vat as eu_vat

        prefix = eu_vat_prefix(country)
        number = "".join(ch for ch in vat_id if ch.isalnum()).upper()
        number = number if number[:2].isalpha() else prefix + number  # stored without its prefix
        if eu_vat.is_valid(number) and number[:2] == prefix:
            return Decimal("0"), REVERSE_CHARGE
    return rates.get(country, Decimal("0")), ""


def compute_month(user: User, month: str) -> list[InvoiceDraft]:
    """The drafts (one per currency) of ``user``'s services billed by invoice for ``month``
    (``"2026-11"``), their texts in ``invoice_locale(user)``; empty when nothing is owed. Reads the
    database only."""
    first, last = month_bounds(month)
    services = db.session.scalars(db.select(Service).where(Service.user_id == user.id,
                                                           Service.billing_mode == "invoice")
                                  .order_by(Service.id)).all()
    by_currency: dict[str, InvoiceDraft] = {}
    profile = user.profile
    rate, note = vat_for(getattr(profile, "country", ""), getattr(profile, "tax_id", ""))
    locale = invoice_locale(user)
    with force_locale(locale):
        note = gettext(note) if note else ""
        for service in services:
            for line in service_lines(service, first, last):
                draft = by_currency.setdefault(line.currency, InvoiceDraft(
                    user=user, period_start=first, period_end=last, currency=line.currency,
                    vat_rate=rate, vat_note=note, locale=locale))
                draft.lines.append(line)
    return [d for d in by_currency.values() if d.lines]


def invoice_locale(user: User) -> str:
    """The language ``user``'s invoices are issued in: their chosen ``locale`` when the panel has
    a catalog for it (``panel.i18n.LANGUAGES``), else English."""
    from panel.i18n import LANGUAGES

    chosen = (user.locale or "").strip()
    return chosen if chosen in LANGUAGES else "en"


# --------------------------------------------------------------------------- issuing

def allocate_number(series: str, year: int) -> str:
    """The next number of ``series`` (``invoice``, ``credit_note``) in ``year``, from its counter
    row locked ``FOR UPDATE`` (created at 0 the first time). Call inside the issuing transaction:
    the lock is held until it commits or rolls back (and a rollback gives the number back)."""
    table = InvoiceCounter.__table__
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    db.session.execute(insert(table).values(series=series, year=year, last_number=0).on_conflict_do_nothing())
    row = db.session.execute(db.select(InvoiceCounter).where(InvoiceCounter.series == series,
                                                             InvoiceCounter.year == year)
                             .with_for_update().execution_options(populate_existing=True)).scalar_one()
    row.last_number += 1
    db.session.flush()
    return f"{SERIES_PREFIX[series]}{year}-{row.last_number:06d}"


def payment_reference(number: str) -> str:
    """An ISO 11649 creditor reference (``RF..``) for an invoice number (digits only kept)."""
    body = "".join(ch for ch in number if ch.isalnum()).upper()
    digits = "".join(str(int(ch, 36)) for ch in body + "RF00")
    return f"RF{98 - int(digits) % 97:02d}{body}"


def _seller() -> dict:
    cfg = current_app.config
    address = str(cfg.get("INVOICE_SELLER_ADDRESS") or "")
    return {"name": cfg.get("INVOICE_SELLER_NAME") or "", "address": [a.strip() for a in address.split("|") if a.strip()],
            "country": (cfg.get("INVOICE_SELLER_COUNTRY") or "").upper(), "vat_id": cfg.get("INVOICE_SELLER_VAT_ID") or "",
            "iban": cfg.get("INVOICE_SELLER_IBAN") or ""}


def _buyer(user: User) -> dict:
    p = user.profile
    if p is None:
        return {"name": user.email, "address": [], "country": "", "vat_id": "", "email": user.email}
    lines = [p.address_line1, p.address_line2, " ".join(x for x in (p.postal_code, p.city) if x), p.region]
    return {"name": p.company or p.full_name or user.email, "contact": p.full_name if p.company else "",
            "address": [x for x in lines if x], "country": p.country, "vat_id": p.tax_id, "email": user.email}


def issue(draft: InvoiceDraft, *, actor: str = "system", now: datetime | None = None) -> Invoice:
    """Store ``draft`` as an issued invoice with the next number of the issue year (not
    committed: the caller commits, which releases the counter lock). Raises ``InvoiceError`` when
    the account already has a live (not void) invoice for that period and currency."""
    now = now or utcnow()
    number = allocate_number("invoice", now.year)  # the lock also serialises the duplicate check
    existing = db.session.scalar(db.select(Invoice.number).where(
        Invoice.user_id == draft.user.id, Invoice.period_start == draft.period_start,
        Invoice.currency == draft.currency, Invoice.status != "void"))
    if existing:
        raise InvoiceError(f"{draft.user.email} already has invoice {existing} for "
                           f"{draft.period_start:%Y-%m} in {draft.currency.upper()}")
    due_days = int(current_app.config.get("INVOICE_DUE_DAYS") or 30)
    invoice = Invoice(number=number, user_id=draft.user.id, period_start=draft.period_start,
                      period_end=draft.period_end, issued_at=now, due_on=now.date() + timedelta(days=due_days),
                      currency=draft.currency, subtotal=draft.subtotal, vat_rate=draft.vat_rate, vat=draft.vat,
                      total=draft.total, vat_note=draft.vat_note, locale=draft.locale, buyer=_buyer(draft.user), seller=_seller(),
                      payment_reference=payment_reference(number), issued_by=actor, status="issued")
    db.session.add(invoice)
    for position, line in enumerate(draft.lines, start=1):
        db.session.add(InvoiceLine(invoice=invoice, position=position, service_id=line.service_id,
                                   kind=line.kind, description=line.description, quantity=line.quantity,
                                   unit=line.unit, unit_price=line.unit_price, amount=line.amount))
    db.session.flush()
    return invoice


@dataclass
class GenerateResult:
    """What ``generate`` did: ``issued`` invoices, ``drafts`` (dry run) and ``skipped`` sentences."""

    issued: list[Invoice] = field(default_factory=list)
    drafts: list[InvoiceDraft] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def generate(month: str, *, email: str | None = None, dry_run: bool = False, actor: str = "system") -> GenerateResult:
    """Compute and (unless ``dry_run``) issue ``month``'s invoices of every account with a service
    billed by invoice, or only of ``email``'s. Each invoice is issued and committed in its own
    transaction. Raises ``InvoiceError`` for a bad month or an unknown account."""
    month_bounds(month)
    query = db.select(User).where(User.id.in_(db.select(Service.user_id).where(Service.billing_mode == "invoice")))
    if email:
        user = db.session.scalar(db.select(User).where(User.email == email.strip().lower()))
        if user is None:
            raise InvoiceError(f"no account {email}")
        query = db.select(User).where(User.id == user.id)
    result = GenerateResult()
    for user in db.session.scalars(query.order_by(User.id)).all():
        for draft in compute_month(user, month):
            result.drafts.append(draft)
            if dry_run:
                continue
            try:
                result.issued.append(issue(draft, actor=actor))
                db.session.commit()
            except InvoiceError as exc:
                db.session.rollback()
                result.skipped.append(str(exc))
    return result


def mark_paid(invoice: Invoice, *, amount: int, paid_on: date, reference: str) -> None:
    """Record a payment (``amount`` minor units received on ``paid_on``, bank ``reference``) of an
    issued invoice (not committed). Raises ``InvoiceError`` when it is not ``issued`` or the
    amount is not positive."""
    if invoice.status != "issued":
        raise InvoiceError(f"invoice {invoice.number} is {invoice.status}, not issued")
    if amount <= 0:
        raise InvoiceError("the amount paid must be positive")
    invoice.status = "paid"
    invoice.paid_amount = int(amount)
    invoice.paid_at = datetime.combine(paid_on, time(12), tzinfo=timezone.utc)
    invoice.paid_reference = reference[:120]


def void(invoice: Invoice, *, reason: str) -> None:
    """Void an issued invoice (not committed); raises ``InvoiceError`` unless it is ``issued``."""
    if invoice.status != "issued":
        raise InvoiceError(f"invoice {invoice.number} is {invoice.status}, not issued")
    invoice.status = "void"
    invoice.voided_at = utcnow()
    invoice.void_reason = reason


def credit(invoice: Invoice, *, amount: int, reason: str, actor: str = "system") -> CreditNote:
    """Issue a credit note of ``amount`` net minor units against ``invoice`` at its VAT rate (not
    committed). Raises ``InvoiceError`` when the amount is not positive or exceeds what is left."""
    given = sum(c.amount for c in invoice.credit_notes)
    if amount <= 0 or amount + given > invoice.subtotal:
        raise InvoiceError(f"a credit note must be between 0.01 and the {invoice.subtotal - given} "
                           f"minor units not yet credited")
    now = utcnow()
    vat = vat_amount(amount, Decimal(invoice.vat_rate))
    note = CreditNote(number=allocate_number("credit_note", now.year), invoice=invoice, issued_at=now,
                      amount=amount, vat=vat, total=amount + vat, reason=reason, issued_by=actor)
    db.session.add(note)
    db.session.flush()
    return note


def parse_amount(text: str, currency: str) -> int:
    """``"18.59"`` (major units) -> ``1859`` minor units; raises ``InvoiceError``."""
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        raise InvoiceError(f"{text!r} is not an amount") from None
    minor = major_to_minor(value, currency)
    if minor != minor.to_integral_value():
        raise InvoiceError(f"{text!r} has more decimals than {currency.upper()} has")
    return int(minor)

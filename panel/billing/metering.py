"""Billable usage: append-only usage records from the periodic sampler, and their report to Stripe
Billing Meters for Stripe-billed services.

Recording (``record_usage``, called by ``panel.jobs.sample_usage`` for every active service whose
plan has a ``metered:`` block): for each metered metric the backend's ``usage`` reports (same
name), one ``UsageRecord`` per sample:

* ``aggregate: max`` (a level, e.g. ``storage_gib``): the quantity is the value read;
* ``aggregate: sum`` (a counter, e.g. ``posts``): the quantity is the increase since the previous
  record's ``reading`` (the first reading counts from zero; a counter that went down, e.g. after a
  reset, counts from zero again);
* ``aggregate: days`` (package-days): no record; the invoice counts them from ``addon_events``.

The ``identifier`` is ``<service external id>-<metric>-<Unix seconds of the period end>``:
unique (a second sampler run of the same period records nothing) and the Stripe meter event's
``identifier``.

Reporting: records of a ``stripe`` service whose metric names a ``meter`` (the Stripe meter's
``event_name``) are reported by a billing task of kind ``report_usage`` (durable work, recorded in
the same transaction as the records): ``POST /v1/billing/meter_events`` with ``event_name``,
``payload[stripe_customer_id]``, ``payload[value]`` (a decimal string), ``timestamp`` (the
period's end) and ``identifier``, plus the idempotency key ``hostpanel-task-<id>-meter-<record
id>``. Stripe enforces identifier uniqueness (24 hours at least), so a retried job never counts a
record twice; an answer that the identifier already exists means an earlier run reached Stripe and
counts as reported. ``reported_at`` is set when the task completes.

Corrections (``void_record``): a record is never changed; an operator voids it ("Void" on the
operator service page, audited), which appends a correction record (``source`` ``correction``,
``cancels_id`` the voided record, ``quantity`` its negative, ``identifier`` ``void-<identifier>``).
Our invoices and the usage shown ignore both. For a Stripe-billed service whose metric has a
meter, the same transaction records a billing task of kind ``cancel_usage``: ``POST
/v1/billing/meter_event_adjustments`` with ``event_name`` (the meter's, as recorded when voided),
``type=cancel`` and ``cancel[identifier]`` = the voided record's identifier, idempotency key
``hostpanel-task-<id>-cancel-<record id>``. A voided record Stripe never counted (its report had
not gone through) is not sent: ``report_usage`` skips voided records, and ``cancel_usage`` then
has nothing to cancel. Stripe only cancels events it received within the last 24 hours; a later
void fails the task with Stripe's message (the operator corrects it in Stripe, e.g. with a credit
note), while our own figures already leave the record out.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from panel.billing import tasks
from panel.billing.invoicing import metered_rates
from panel.billing.models import BillingTask
from panel.billing.stripe_api import BillingAPIError
from panel.extensions import db
from panel.models import Service
from panel.models.base import utcnow
from panel.models.invoices import UsageRecord, decimal_text

DUPLICATE_WORDS = ("already exists", "already been used", "duplicate")


def _aware(value: datetime) -> datetime:
    from panel.billing.models import aware

    return aware(value)


def identifier_for(service: Service, metric: str, period_end: datetime) -> str:
    """``<external id>-<metric>-<Unix seconds of the period end>`` (at most 100 characters, Stripe's
    limit)."""
    return f"{service.external_id}-{metric}-{int(_aware(period_end).timestamp())}"[:100]


def record_usage(service: Service, metrics, now: datetime | None = None, *, source: str = "sampler") -> list[UsageRecord]:
    """Append the usage records of one sample of ``service`` (``metrics``: ``panel.backends.Metric``
    values of its ``usage``) for its plan's metered metrics, and for a Stripe-billed service a
    ``report_usage`` billing task (flushed, not committed). Returns the new records."""
    rates = metered_rates(service.plan)
    if not rates:
        return []
    now = now or utcnow()
    values = {m.name: m.value for m in metrics}
    made = []
    for metric, rate in rates.items():
        if rate["aggregate"] == "days" or metric not in values or values[metric] is None:
            continue  # package-days are counted from the add-on event log, not from samples
        reading = Decimal(str(values[metric]))  # a backend's float, read as written (never binary)
        last = db.session.scalar(db.select(UsageRecord).where(UsageRecord.service_id == service.id,
                                                              UsageRecord.metric == metric,
                                                              UsageRecord.cancels_id.is_(None))
                                 .order_by(UsageRecord.period_end.desc(), UsageRecord.id.desc()).limit(1))
        start = _aware(last.period_end) if last is not None else now
        if last is not None and start >= now:
            continue
        if rate["aggregate"] == "max":
            quantity = reading
        else:
            before = Decimal(last.reading) if last is not None and last.reading is not None else Decimal(0)
            quantity = reading - before if reading >= before else reading
        identifier = identifier_for(service, metric, now)
        if db.session.scalar(db.select(UsageRecord.id).where(UsageRecord.identifier == identifier)):
            continue
        row = UsageRecord(service_id=service.id, metric=metric, period_start=start, period_end=now,
                          quantity=quantity, reading=reading, source=source, identifier=identifier)
        db.session.add(row)
        made.append(row)
    db.session.flush()
    report(service, made)
    return made


def report(service: Service, records: list[UsageRecord]) -> BillingTask | None:
    """Record a ``report_usage`` task for those of ``records`` that go to a Stripe meter (a
    ``stripe`` service, a metric with ``meter``, a quantity above zero). Flushed, not committed."""
    if service.billing_mode != "stripe":
        return None
    rates = metered_rates(service.plan)
    ids = [r.id for r in records if rates.get(r.metric, {}).get("meter") and r.quantity > 0]
    if not ids:
        return None
    return tasks.record("report_usage", service, {"records": ids}, actor="sampler")


def _customer(task: BillingTask) -> str:
    sub = tasks._subscription(db.session.get(Service, task.service_id))
    if sub is None or not sub.stripe_customer_id:
        raise BillingAPIError("the service has no Stripe customer to report usage for", transient=False)
    return sub.stripe_customer_id


def _report_usage(task: BillingTask) -> dict:
    """Runner of ``report_usage``: one meter event per record not yet reported."""
    customer = _customer(task)
    service = db.session.get(Service, task.service_id)
    rates = metered_rates(service.plan)
    sent, already = [], []
    voided = set(db.session.scalars(db.select(UsageRecord.cancels_id).where(
        UsageRecord.cancels_id.in_(task.payload["records"]))))
    for record in db.session.scalars(db.select(UsageRecord).where(UsageRecord.id.in_(task.payload["records"]))
                                     .order_by(UsageRecord.id)):
        if record.reported_at is not None or record.id in voided:  # voided before it was sent: never counted
            continue
        params = {"event_name": rates[record.metric]["meter"], "identifier": record.identifier,
                  "timestamp": int(_aware(record.period_end).timestamp()),
                  "payload": {"stripe_customer_id": customer, "value": decimal_text(record.quantity)}}
        try:
            tasks.stripe_api.call("report usage to the Stripe meter", tasks._client().v1.billing.meter_events.create,
                                  params=params, options={"idempotency_key": task.idempotency_key(f"meter-{record.id}")})
            sent.append(record.id)
        except BillingAPIError as exc:
            if exc.transient or not any(w in str(exc).lower() for w in DUPLICATE_WORDS):
                raise
            already.append(record.id)  # an earlier run reached Stripe: counted once already
    return {"sent": sent, "already": already}


def _after_report(task: BillingTask) -> None:
    """Completion of ``report_usage``: stamp ``reported_at`` on the records Stripe has."""
    ids = list((task.result or {}).get("sent", [])) + list((task.result or {}).get("already", []))
    now = utcnow()
    for record in db.session.scalars(db.select(UsageRecord).where(UsageRecord.id.in_(ids))):
        if record.reported_at is None:
            record.reported_at = now


class VoidError(ValueError):
    """A usage record that cannot be voided (already voided, itself a correction); the message is
    for the operator."""


def void_record(record: UsageRecord, *, actor: str, reason: str = "") -> UsageRecord:
    """Void ``record``: append its correction record (see the module docstring) and, for a
    Stripe-billed service whose metric reports to a meter, a ``cancel_usage`` billing task, both
    flushed, not committed (the caller audits and commits). Returns the correction record.
    Raises ``VoidError``."""
    if record.cancels_id is not None:
        raise VoidError(f"usage record {record.id} is a correction; it cannot be voided")
    if db.session.scalar(db.select(UsageRecord.id).where(UsageRecord.cancels_id == record.id)):
        raise VoidError(f"usage record {record.id} is voided already")
    correction = UsageRecord(service_id=record.service_id, metric=record.metric, period_start=record.period_start,
                             period_end=record.period_end, quantity=-Decimal(record.quantity), reading=None,
                             source="correction", identifier=f"void-{record.identifier}"[:100],
                             cancels_id=record.id)
    db.session.add(correction)
    db.session.flush()
    service = db.session.get(Service, record.service_id)
    meter = metered_rates(service.plan).get(record.metric, {}).get("meter")
    if service.billing_mode == "stripe" and meter and Decimal(record.quantity) > 0:
        tasks.record("cancel_usage", service, {"corrections": [
            {"record": correction.id, "voids": record.id, "identifier": record.identifier, "event_name": meter}]},
            actor=actor)
    from panel import lifecycle

    lifecycle.note(service, f"usage record {record.id} ({record.metric} {decimal_text(record.quantity)}, "
                            f"{record.identifier}) voided by {actor}" + (f": {reason}" if reason else ""),
                   actor=actor, kind="billing")
    return correction


def usage_records_of(service, limit: int = 100) -> list[dict]:
    """The service's latest billable usage records for its operator page, newest first:
    ``[{"record": UsageRecord, "voided_by": the correction record or None}]`` (corrections are
    listed too, as rows of their own)."""
    rows = db.session.scalars(db.select(UsageRecord).where(UsageRecord.service_id == service.id)
                              .order_by(UsageRecord.id.desc()).limit(limit)).all()
    ids = [r.id for r in rows]
    corrections = {c.cancels_id: c for c in db.session.scalars(
        db.select(UsageRecord).where(UsageRecord.cancels_id.in_(ids)))} if ids else {}
    return [{"record": r, "voided_by": corrections.get(r.id)} for r in rows]


def _cancel_usage(task: BillingTask) -> dict:
    """Runner of ``cancel_usage``: one meter event adjustment per voided record Stripe counted
    (``reported_at`` set; one it never got is skipped)."""
    cancelled, skipped = [], []
    for entry in task.payload["corrections"]:
        voided = db.session.get(UsageRecord, entry["voids"])
        if voided is None or voided.reported_at is None:
            skipped.append(entry["record"])
            continue
        params = {"event_name": entry["event_name"], "type": "cancel", "cancel": {"identifier": entry["identifier"]}}
        tasks.stripe_api.call("cancel the meter event", tasks._client().v1.billing.meter_event_adjustments.create,
                              params=params, options={"idempotency_key": task.idempotency_key(f"cancel-{voided.id}")})
        cancelled.append(entry["record"])
    return {"cancelled": cancelled, "skipped": skipped}


def _after_cancel_usage(task: BillingTask) -> None:
    """Completion of ``cancel_usage``: stamp ``reported_at`` on the corrections Stripe took."""
    ids = list((task.result or {}).get("cancelled", []))
    now = utcnow()
    for record in db.session.scalars(db.select(UsageRecord).where(UsageRecord.id.in_(ids))):
        if record.reported_at is None:
            record.reported_at = now


def register() -> None:
    """Add ``report_usage`` and ``cancel_usage`` to the billing task kinds."""
    tasks.RUNNERS["report_usage"] = _report_usage
    tasks.AFTER["report_usage"] = _after_report
    tasks.RUNNERS["cancel_usage"] = _cancel_usage
    tasks.AFTER["cancel_usage"] = _after_cancel_usage


register()

"""``POST /stripe/webhook``: verify, store, answer, and hand the work to a job.

Contract (Stripe "Receive events in your webhook endpoint"):

* The raw body is verified with ``stripe.WebhookSignature.verify_header`` against
  ``PANEL_STRIPE_WEBHOOK_SECRET`` with ``PANEL_STRIPE_WEBHOOK_TOLERANCE`` seconds (300). A
  missing or bad signature, a stale timestamp, a body that is not UTF-8 JSON or not an event:
  400 and nothing is stored.
* The event is stored by its id (``stripe_events``, primary key), due at once, and answers 200;
  after the commit it is handed to a worker (``process_event``, work kind ``stripe``), and the
  workers' sweep hands it over again if that was lost. An id seen before answers 200 and runs
  nothing twice (an unprocessed one is handed over again; its claim lets one run apply it).
  Types we do not handle are stored as processed ("ignored").
"""
from __future__ import annotations

import json
import logging

import stripe
from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import IntegrityError

from panel import work
from panel.billing.handlers import HANDLERS
from panel.billing.models import StripeEvent
from panel.extensions import db
from panel.models.base import utcnow

log = logging.getLogger(__name__)

bp = Blueprint("stripe_webhook", __name__)


def _bad(message: str):
    return jsonify({"error": message}), 400


def parse_event(payload: bytes, header: str | None, secret: str, tolerance: int) -> dict:
    """Verify ``payload`` (raw bytes) against the ``Stripe-Signature`` ``header`` and return the
    event as a dict with at least ``id`` (str), ``type`` (str), ``created`` (int seconds) and
    ``data.object`` (dict). Raises ``ValueError`` with a short reason (no secret in it)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    try:
        stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        reason = str(getattr(exc, "_message", "") or "")
        if "tolerance" in reason:
            raise ValueError("signature timestamp is too old") from None
        if not header:
            raise ValueError("missing Stripe-Signature header") from None
        raise ValueError("bad signature") from None
    try:
        event = json.loads(text)
    except ValueError:
        raise ValueError("body is not JSON") from None
    if not isinstance(event, dict):
        raise ValueError("body is not an event")
    data = event.get("data")
    if (not isinstance(event.get("id"), str) or not event["id"] or len(event["id"]) > 255
            or not isinstance(event.get("type"), str) or not event["type"]
            or not isinstance(event.get("created"), int) or not 0 <= event["created"] < 2**63
            or not isinstance(data, dict) or not isinstance(data.get("object"), dict)):
        raise ValueError("body is not a Stripe event (id, type, created, data.object)")
    return event


def _store(event: dict) -> bool:
    """Insert the event unless its id exists; returns whether this call inserted it."""
    known = event["type"] in HANDLERS
    now = utcnow()
    values = {"id": event["id"], "type": event["type"][:100], "created": event["created"],
              "livemode": bool(event.get("livemode")), "payload": event, "received_at": now,
              "attempts": 0, "lease_token": 0, "lost_runs": 0,
              "due_at": now if known else None, "processed_at": None if known else now,
              "outcome": None if known else f"ignored: {event['type']} is not handled"}
    dialect = db.engine.dialect.name
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(StripeEvent).values(**values).on_conflict_do_nothing(index_elements=["id"])
        inserted = db.session.execute(stmt).rowcount == 1
        if inserted and known:
            work.wake_after_commit("stripe", event["id"])
        db.session.commit()
        return inserted
    db.session.add(StripeEvent(**values))
    if known:
        work.wake_after_commit("stripe", event["id"])
    try:
        db.session.commit()
        return True
    except IntegrityError:
        db.session.rollback()
        return False


def hand_over_event(event_id: str) -> bool:
    """Hand stored event ``event_id`` to a worker now (``process_event``); never raises."""
    from panel import dispatch

    return dispatch.hand_over("stripe", event_id)


@bp.post("/stripe/webhook")
def webhook():
    """Stripe's webhook endpoint (see the module docstring); answers ``{"received": true}``."""
    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        return jsonify({"error": "webhook not configured"}), 503
    try:
        event = parse_event(request.get_data(cache=False), request.headers.get("Stripe-Signature"),
                            secret, int(current_app.config["STRIPE_WEBHOOK_TOLERANCE"]))
    except ValueError as exc:
        log.info("rejected a Stripe webhook delivery: %s", exc)
        return _bad(str(exc))
    inserted = _store(event)  # handed to a worker after its commit
    if event["type"] not in HANDLERS:
        return jsonify({"received": True, "ignored": True})
    if inserted:
        return jsonify({"received": True})
    row = db.session.get(StripeEvent, event["id"])
    if row is not None and row.processed_at is None and row.due_at is not None and not row.lease_owner:
        hand_over_event(event["id"])  # its first hand-over may have been lost; one claim runs it
    db.session.rollback()
    return jsonify({"received": True, "duplicate": True})

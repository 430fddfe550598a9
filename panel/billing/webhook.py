"""``POST /stripe/webhook``: verify, store, answer, and hand the work to a job.

Contract (Stripe "Receive events in your webhook endpoint"):

* The raw body is verified with ``stripe.WebhookSignature.verify_header`` against
  ``PANEL_STRIPE_WEBHOOK_SECRET`` with ``PANEL_STRIPE_WEBHOOK_TOLERANCE`` seconds (300). A
  missing or bad signature, a stale timestamp, a body that is not UTF-8 JSON or not an event:
  400 and nothing is stored.
* The event is stored by its id (``stripe_events``, primary key), due at once, and answers 200;
  once stored (one ``INSERT ... ON CONFLICT DO NOTHING`` in autocommit: one round trip to
  PostgreSQL) it is handed to a worker (``process_event``, work kind ``stripe``: one Redis round
  trip), and the workers' sweep hands it over again if that was lost. An id seen before answers 200 and runs
  nothing twice (an unprocessed one is handed over again; its claim lets one run apply it).
  Types we do not handle are stored as processed ("ignored").
"""
from __future__ import annotations

import json
import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import IntegrityError

from panel.billing.handlers import HANDLERS
from panel.billing.models import StripeEvent
from panel.extensions import db
from panel.models.base import utcnow

log = logging.getLogger(__name__)

bp = Blueprint("stripe_webhook", __name__)


def _bad(message: str):
    return jsonify({"error": message}), 400


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_event(payload: bytes, header: str | None, secret: str, tolerance: int) -> dict:
    """Verify ``payload`` (raw bytes) against the ``Stripe-Signature`` ``header`` and return the
    event as a dict with at least ``id`` (str), ``type`` (str), ``created`` (int seconds) and
    ``data.object`` (dict). Raises ``ValueError`` with a short reason (no secret in it)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    import stripe  # where it is used: a web worker that never sees a webhook does not load the SDK

    try:
        stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        reason = str(getattr(exc, "_message", "") or "")
        if "tolerance" in reason:
            raise ValueError("signature timestamp is too old") from None
        if not header:
            raise ValueError("missing Stripe-Signature header") from None
        raise ValueError("bad signature") from None
    from panel.security import MAX_JSON_DEPTH, parsed_json_problem

    try:  # NaN and Infinity are not JSON (PostgreSQL's JSONB refuses them): 400, not a 500
        event = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise ValueError(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise ValueError("body is not JSON") from None
    # the app's input guard does not run on this route (panel.app.PanelFlask.bare): its checks on
    # the parsed event, NUL and lone surrogates only where the text has \u escapes
    problem = parsed_json_problem(event, strings="\\u" in text)
    if problem:
        raise ValueError(problem)
    if not isinstance(event, dict):
        raise ValueError("body is not an event")
    data = event.get("data")
    if (not isinstance(event.get("id"), str) or not event["id"] or len(event["id"]) > 255
            or not isinstance(event.get("type"), str) or not event["type"]
            or not isinstance(event.get("created"), int) or not 0 <= event["created"] < 2**63
            or not isinstance(data, dict) or not isinstance(data.get("object"), dict)):
        raise ValueError("body is not a Stripe event (id, type, created, data.object)")
    return event


def _autocommit(app=None):
    """An engine of its own in autocommit mode (a small pool beside the app's, to the same
    database): one ``INSERT`` is its own transaction, so storing an event is one round trip (no
    ``BEGIN``, no ``COMMIT``, no isolation level switched back and forth per checkout)."""
    from sqlalchemy import create_engine

    app = app or current_app._get_current_object()
    found = app.extensions.get("panel_autocommit_engine")
    if found is None or found[0] is not db.engine:
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options.update(pool_size=2, max_overflow=8)
        found = (db.engine, create_engine(db.engine.url, isolation_level="AUTOCOMMIT", **options))
        app.extensions["panel_autocommit_engine"] = found
        from panel.app import ping_idle_connections

        ping_idle_connections(found[1], float(app.config.get("DB_PING_AFTER") or 0))
    return found[1]


_INSERTS: dict = {}


def _insert_statement(dialect: str):
    """``INSERT INTO stripe_events ... ON CONFLICT (id) DO NOTHING``, built once per dialect
    (its compiled form is cached by SQLAlchemy from then on). On PostgreSQL the payload is the
    delivery's own text cast to JSONB (verified, and checked by ``panel.security``'s JSON guard),
    not the parsed event serialized again."""
    if dialect not in _INSERTS:
        from sqlalchemy import Text, bindparam, cast

        table = StripeEvent.__table__
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB, insert

            values = {c.name: bindparam(c.name, type_=c.type) for c in table.columns if c.name != "payload"}
            values["payload"] = cast(bindparam("payload", type_=Text), JSONB)
            stmt = insert(table).values(values)
        else:
            from sqlalchemy.dialects.sqlite import insert

            stmt = insert(table)
        _INSERTS[dialect] = stmt.on_conflict_do_nothing(index_elements=["id"])
    return _INSERTS[dialect]


def _store(event: dict, raw: str | None = None) -> tuple[bool, tuple | None]:
    """Insert the event unless its id exists. Returns ``(inserted, state)``: ``state`` is
    ``(processed_at, due_at, lease_owner)`` of the row that was there already (``None`` when
    this call inserted it). On PostgreSQL and SQLite a new event costs one statement in
    autocommit (one round trip); then, after it, one Redis round trip hands it over."""
    known = event["type"] in HANDLERS
    now = utcnow()
    values = {"id": event["id"], "type": event["type"][:100], "created": event["created"],
              "livemode": bool(event.get("livemode")), "payload": event, "received_at": now,
              "attempts": 0, "lease_token": 0, "lost_runs": 0,
              "due_at": now if known else None, "processed_at": None if known else now,
              "outcome": None if known else f"ignored: {event['type']} is not handled"}
    dialect = db.engine.dialect.name
    if dialect in ("postgresql", "sqlite"):
        table = StripeEvent.__table__
        if dialect == "postgresql":
            values = {**{c.name: None for c in table.columns}, **values, "payload": raw or json.dumps(event)}
        with _autocommit().connect() as conn:
            if conn.execute(_insert_statement(dialect), values).rowcount == 1:
                return True, None
            row = conn.execute(db.select(table.c.processed_at, table.c.due_at, table.c.lease_owner)
                               .where(table.c.id == event["id"])).first()
        return False, tuple(row) if row is not None else None
    db.session.add(StripeEvent(**values))
    try:
        db.session.commit()
        return True, None
    except IntegrityError:
        db.session.rollback()
        row = db.session.get(StripeEvent, event["id"])
        state = (row.processed_at, row.due_at, row.lease_owner) if row is not None else None
        db.session.rollback()
        return False, state


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
    payload = request.get_data(cache=False)
    try:
        event = parse_event(payload, request.headers.get("Stripe-Signature"),
                            secret, int(current_app.config["STRIPE_WEBHOOK_TOLERANCE"]))
    except ValueError as exc:
        log.info("rejected a Stripe webhook delivery: %s", exc)
        return _bad(str(exc))
    inserted, state = _store(event, payload.decode("utf-8"))
    if event["type"] not in HANDLERS:
        return jsonify({"received": True, "ignored": True})
    if inserted:
        hand_over_event(event["id"])  # the row is stored (autocommit): a lost hand-over is the sweep's
        return jsonify({"received": True})
    if state is not None and state[0] is None and state[1] is not None and not state[2]:
        hand_over_event(event["id"])  # its first hand-over may have been lost; one claim runs it
    return jsonify({"received": True, "duplicate": True})

"""``Idempotency-Key`` for ``POST /api/v1/orders`` (Stripe's convention, see their "Idempotent
requests"): a client that did not get an answer (a timeout, a 500 after the commit) sends the
same request with the same key and gets the first answer back instead of a second order.

* The key is 1-255 printable ASCII characters, per account, kept ``KEY_TTL`` (24 h).
* It is stored in the same transaction as the service its request created (``record``), with
  a SHA-256 of the request body; the first answer is stored once built (``remember``).
* A request with a known key and the same body gets the stored answer (or, when the first
  request died after its commit, one rebuilt from the service) with ``Idempotent-Replayed:
  true``; with another body it gets 422 ``idempotency_key_reused``. An order that failed (4xx,
  or its checkout could not start) stores nothing, so the key can be used again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re

from flask import jsonify, url_for

from panel.api.errors import error_response
from panel.extensions import db
from panel.models import IdempotencyKey, Service, User
from panel.models.base import utcnow
from panel.models.idempotency import KEY_TTL

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
_VALID = re.compile(r"[\x21-\x7e]{1,255}")


def parse_key(value: str | None) -> str | None:
    """The header's key, or ``None`` without one; raises ``ValueError`` for a malformed key."""
    if value is None:
        return None
    value = value.strip()
    if not _VALID.fullmatch(value):
        raise ValueError("must be 1 to 255 printable ASCII characters, without spaces")
    return value


def request_hash(body: dict) -> str:
    """SHA-256 (hex) of the request body as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
                          .encode()).hexdigest()


def find(user: User, key: str) -> IdempotencyKey | None:
    """The live key row of ``user`` (an expired one is deleted and ``None`` returned)."""
    row = db.session.scalar(db.select(IdempotencyKey).where(IdempotencyKey.user_id == user.id,
                                                            IdempotencyKey.key == key))
    if row is not None:
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=utcnow().tzinfo)
        if created < utcnow() - KEY_TTL:
            db.session.delete(row)
            db.session.commit()
            return None
    return row


def replay(user: User, key: str, digest: str):
    """The answer to repeat for a known key (a Flask response), or ``None`` for a new key."""
    from panel import views

    row = find(user, key)
    if row is None:
        return None
    if row.request_hash != digest:
        return error_response(422, "idempotency_key_reused",
                              "this Idempotency-Key was sent with another request; use a new key for a new order",
                              {HEADER: "was used with another request"})
    if row.response_body is not None:
        body, status = row.response_body, row.response_status or 201
    else:  # the first request died after its commit: rebuild its answer from the service
        service = db.session.get(Service, row.service_id)
        body, status = {"service": views.service_json(service, live=False),
                        "checkout_url": _checkout_url(service)}, 201
    response = jsonify(body)
    response.status_code = status
    response.headers["Idempotent-Replayed"] = "true"
    if row.service_id:
        response.headers["Location"] = url_for("api.service", service_id=row.service_id)
    return response


def _checkout_url(service: Service) -> str | None:
    from panel import billing

    if service.plan.is_free or service.status != "pending_payment" or not billing.configured():
        return None
    return billing.checkout_url(service)


def record(user: User, key: str, digest: str):
    """A ``record_with`` callback for ``lifecycle.create_service``: adds the key row so it commits
    with the service."""

    def add(service: Service) -> None:
        db.session.add(IdempotencyKey(user_id=user.id, key=key, request_hash=digest, service_id=service.id))

    return add


def remember(user: User, key: str, status: int, body: dict) -> None:
    """Store the first answer on the key row (best effort: a failure is logged, the answer is
    rebuilt from the service on a replay)."""
    try:
        row = find(user, key)
        if row is not None and row.response_body is None:
            row.response_status, row.response_body = status, body
            db.session.commit()
    except Exception as exc:
        db.session.rollback()
        log.warning("could not store the answer of an idempotent order (%s)", type(exc).__name__)


def after_failure(user: User, key: str, digest: str):
    """After ``place_order`` failed: the answer of a concurrent request with the same key that
    placed the order (a Flask response), or ``None``. A key recorded with an order that was then
    cancelled (its checkout could not start) is dropped, so the client may send it again."""
    db.session.rollback()
    row = find(user, key)
    if row is None:
        return None
    if row.service is not None and row.service.status != "cancelled":
        return replay(user, key, digest)
    db.session.delete(row)
    db.session.commit()
    return None

"""JSON API v1 routes. Every route needs ``Authorization: Bearer hp_...`` except the plan list
and the OpenAPI document. Another customer's service answers 404."""
from flask import current_app, g, jsonify, request, url_for
from flask_login import current_user

from panel import views
from panel.api import bp, idempotency
from panel.api.errors import error_response
from panel.api.openapi import openapi_document
from panel.backends import json_schema
from panel.extensions import (account_key, address_key, api_address_limit, api_limit, db, is_exempt_api_request,
                              is_operator_request, limiter, order_address_limit, order_limit)
from panel.models import ApiToken, Service
from panel.orders import OrderError, orderable_plans, place_order
from panel.plugins import backend_class, plugins

PUBLIC = {"api.plans", "api.openapi"}

# The general API limit (seed 004): per account and per client address, operators exempt.
limiter.limit(api_limit, key_func=account_key, exempt_when=is_exempt_api_request)(bp)
limiter.limit(api_address_limit, key_func=address_key, exempt_when=is_exempt_api_request)(bp)


@bp.before_request
def authenticate():
    """Resolve ``Authorization: Bearer hp_...`` (401 if unknown, 403 if the account is disabled); the
    panel's own pages may GET with their session.
    """
    g.api_user = None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        user = ApiToken.authenticate(header[7:].strip())
        if user is None:
            return error_response(401, "unauthorized", "invalid or revoked token")
        if not user.is_active:
            return error_response(403, "forbidden", "this account is disabled")
        if db.session.dirty:
            db.session.commit()
        g.api_user = user
    elif current_user.is_authenticated and request.method == "GET":
        # the panel's own pages may read with their session; writes need a token (no CSRF here)
        g.api_user = current_user._get_current_object()
    if g.api_user is None and request.endpoint not in PUBLIC:
        return error_response(401, "unauthorized", "send Authorization: Bearer <token>")


def _service_or_404(service_id: int) -> Service | None:
    svc = db.session.get(Service, service_id)
    if svc is None or (svc.user_id != g.api_user.id and not g.api_user.is_operator):
        return None
    return svc


@bp.get("/plans")
def plans():
    """GET /api/v1/plans: orderable plans, each with ``order_params``: the JSON Schema (draft
    2020-12) of its backend's ``OrderParams`` (public)."""
    out = []
    for plan in orderable_plans():
        item = plan.to_json()
        item["order_params"] = json_schema(backend_class(plan.backend).OrderParams)
        out.append(item)
    return jsonify({"plans": out})


@bp.post("/orders")
@limiter.limit(order_limit, key_func=account_key, exempt_when=is_operator_request)
@limiter.limit(order_address_limit, key_func=address_key, exempt_when=is_operator_request)
def orders():
    """POST /api/v1/orders ``{"plan": slug, "params": {...}}``: 201 ``{"service", "checkout_url"}``;
    errors 400/404/409/422 (``panel.orders.OrderError``). With an ``Idempotency-Key`` header a
    repeated request gets the first answer back (``panel.api.idempotency``).
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error_response(400, "bad_request", "send a JSON object: {\"plan\": slug, \"params\": {...}}")
    try:
        key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    except ValueError as exc:
        return error_response(400, "bad_request", f"{idempotency.HEADER} {exc}", {idempotency.HEADER: str(exc)})
    user = g.api_user
    digest = idempotency.request_hash(body) if key else ""
    if key:
        repeated = idempotency.replay(user, key, digest)
        if repeated is not None:
            return repeated
    slug = body.get("plan")
    if not isinstance(slug, str) or not slug:
        return error_response(422, "invalid", "plan is required", {"plan": "is required"})
    try:
        result = place_order(user, slug, body.get("params") or {}, actor=f"api:{user.email}",
                             record_with=idempotency.record(user, key, digest) if key else None)
    except OrderError as exc:
        repeated = idempotency.after_failure(user, key, digest) if key else None
        if repeated is not None:  # a concurrent request with the same key placed the order
            return repeated
        return error_response(exc.status, exc.code, exc.message, exc.fields or None)
    svc = result.service
    payload = {"service": views.service_json(svc, live=False, operator=user.is_operator),
               "checkout_url": result.checkout_url}
    if key:
        idempotency.remember(user, key, 201, payload)
    response = jsonify(payload)
    response.status_code = 201
    response.headers["Location"] = url_for("api.service", service_id=svc.id)
    return response


@bp.get("/services")
def services():
    """GET /api/v1/services[?status=&live=1]: the caller's services (details and usage only with
    ``live=1``).
    """
    from sqlalchemy.orm import selectinload

    query = (db.select(Service).where(Service.user_id == g.api_user.id)
             .options(selectinload(Service.operations), selectinload(Service.plan))
             .order_by(Service.id.desc()))
    status = request.args.get("status")
    if status:
        query = query.where(Service.status == status)
    rows = db.session.scalars(query).all()
    live = request.args.get("live", "0") in ("1", "true")
    return jsonify({"services": [views.service_json(s, live=live, operator=g.api_user.is_operator) for s in rows]})


@bp.get("/services/<int:service_id>")
def service(service_id):
    """GET /api/v1/services/<id>: one service with usage and, for its customer, the client area
    (sections, actions) and the status in plain words; operators get the raw details (masked) and
    the backend's status detail. Another customer's answers 404.
    """
    svc = _service_or_404(service_id)
    if svc is None:
        return error_response(404, "not_found", "no such service")
    return jsonify({"service": views.service_json(svc, operator=g.api_user.is_operator)})


@bp.get("/services/<int:service_id>/events")
def events(service_id):
    """GET /api/v1/services/<id>/events: the service's history, oldest first. Customers get it in
    their words (actors as roles, no internal steps: ``panel.messages.events_json``); operators get
    the raw append-only event log."""
    from panel import messages

    svc = _service_or_404(service_id)
    if svc is None:
        return error_response(404, "not_found", "no such service")
    if not g.api_user.is_operator:
        return jsonify({"events": messages.events_json(svc)})
    return jsonify({"events": [e.to_json() for e in svc.events]})


@bp.post("/services/<int:service_id>/actions/<name>")
@limiter.limit(lambda: current_app.config["ACTION_LIMIT"], key_func=account_key)
def run_action(service_id, name):
    """POST /api/v1/services/<id>/actions/<name> ``{"params": {...}}``: run one of the service's
    actions (``actions`` in the service); 202 with the service, 404 unknown, 409 not available now,
    422 bad params."""
    from panel import client_area, lifecycle
    from panel.backends import ValidationError

    svc = _service_or_404(service_id)
    if svc is None:
        return error_response(404, "not_found", "no such service")
    body = request.get_json(silent=True) or {}
    params = body.get("params") if isinstance(body, dict) else None
    if params is not None and not isinstance(params, dict):
        return error_response(422, "invalid", "params must be an object", {"params": "must be an object"})
    if client_area.find(svc, name) is None:
        return error_response(404, "not_found", f"this service has no action {name!r}")
    actor = f"{'operator' if g.api_user.is_operator else 'api'}:{g.api_user.email}"
    try:
        client_area.request_action(svc, name, params or {}, actor=actor)
    except ValidationError as exc:
        return error_response(422, "invalid", "some action params are invalid", exc.errors)
    except (client_area.ActionError, lifecycle.LifecycleError) as exc:
        return error_response(409, "not_available", str(exc))
    response = jsonify({"service": views.service_json(svc, live=False, operator=g.api_user.is_operator)})
    response.status_code = 202
    return response


@bp.get("/services/<int:service_id>/usage")
def usage_history(service_id):
    """Usage samples of the last ``hours`` (default 24, at most 720), oldest first."""
    from datetime import timedelta

    from panel.models import UsageSample
    from panel.models.base import utcnow

    svc = _service_or_404(service_id)
    if svc is None:
        return error_response(404, "not_found", "no such service")
    import math

    try:
        hours = float(request.args.get("hours", 24))
    except ValueError:
        hours = math.nan
    if not math.isfinite(hours):
        return error_response(400, "bad_request", "hours must be a finite number of hours (0.1 to 720)",
                              {"hours": "must be a finite number (0.1 to 720)"})
    hours = min(max(hours, 0.1), 720)
    since = utcnow() - timedelta(hours=hours)
    rows = db.session.scalars(db.select(UsageSample).where(UsageSample.service_id == svc.id,
                                                           UsageSample.at >= since)
                              .order_by(UsageSample.at).limit(5000)).all()
    return jsonify({"samples": [r.to_json() for r in rows]})


@bp.get("/openapi.json")
def openapi():
    """GET /api/v1/openapi.json: the OpenAPI 3.1 document."""
    return jsonify(openapi_document(plugins().backends))

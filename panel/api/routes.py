"""JSON API v1 routes. Every route needs ``Authorization: Bearer hp_...`` except the plan list
and the OpenAPI document. Another customer's service answers 404."""
from flask import current_app, g, jsonify, request, url_for
from flask_login import current_user

from panel import views
from panel.api import bp, idempotency
from panel.api.errors import error_response
from panel.api.openapi import openapi_document
from panel.backends import json_schema
from panel.extensions import (account_key, address_key, api_address_limit, api_limit, bearer_user, db,
                              is_exempt_api_request, is_operator_request, limiter, order_address_limit,
                              order_account_key, order_limit, order_placed)
from panel.models import Service
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
        user = bearer_user()
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
    """GET /api/v1/plans: orderable plans (public), each with its ``prices`` per term (amount in minor
    units, currency, interval, tax behaviour, display text), its ``addons`` (with the terms they are
    offered on and their prices) and ``order_params``: the JSON Schema (draft 2020-12) of its
    backend's ``OrderParams``."""
    from panel.billing.prices import plan_json

    out = []
    for plan in orderable_plans():
        item = plan_json(plan)
        item["order_params"] = json_schema(backend_class(plan.backend).OrderParams)
        out.append(item)
    return jsonify({"plans": out})


@bp.post("/orders")
@limiter.shared_limit(order_limit, scope="orders", key_func=order_account_key, exempt_when=is_operator_request,
                      deduct_when=order_placed)
@limiter.limit(order_address_limit, key_func=address_key, exempt_when=is_operator_request)
def orders():
    """POST /api/v1/orders ``{"plan": slug, "term": "yearly", "addons": [slug...], "params": {...}}``
    (``term`` defaults to the plan's, ``addons`` to none): 201 ``{"service", "checkout_url"}``; errors
    400/404/409/422 (``panel.orders.OrderError``). With an ``Idempotency-Key`` header a repeated
    request gets the first answer back (``panel.api.idempotency``).
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
    term = body.get("term")
    if term is not None and not isinstance(term, str):
        return error_response(422, "invalid_term", "term must be a string", {"term": "must be a string"})
    try:
        result = place_order(user, slug, body.get("params") or {}, actor=f"api:{user.email}",
                             term=term or None, addons=body.get("addons"),
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


@bp.get("/services/<int:service_id>/usage/current")
def usage_current(service_id):
    """GET /api/v1/services/<id>/usage/current: the billable usage so far this calendar month
    (metered metrics: used, free allowance, unit price, amount so far in minor units) and the
    projected charge (Stripe's upcoming invoice for a Stripe-billed service, cached a few minutes;
    this month's own invoice so far, a dry run, for one paid by invoice; ``null`` when nothing is
    billed). Shape: ``panel.billing.projection.usage_report``; another customer's service 404."""
    from panel.billing.projection import usage_report

    svc = _service_or_404(service_id)
    if svc is None:
        return error_response(404, "not_found", "no such service")
    return jsonify(usage_report(svc))


def _billing_request(service_id: int, example: str):
    """``(service, JSON object body, None)`` for a billing change, or ``(None, None, error response)``
    (404 for another customer's service, 400 for a body that is not a JSON object)."""
    svc = _service_or_404(service_id)
    if svc is None:
        return None, None, error_response(404, "not_found", "no such service")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return None, None, error_response(400, "bad_request", f"send a JSON object: {example}")
    return svc, body, None


def _accepted(payload: dict):
    response = jsonify(payload)
    response.status_code = 202
    return response


def _change_error(exc):
    return error_response(exc.status, "change_refused" if exc.status == 409 else "invalid", str(exc),
                          {exc.field: str(exc)} if exc.field else None)


@bp.get("/services/<int:service_id>/subscription")
def subscription(service_id):
    """GET /api/v1/services/<id>/subscription (seed 003's getSubscriptionInfo): plan, term, billing
    mode, status, renewal or end date, price, add-ons with their prices and states, the add-on
    log, and the plans and terms it can move to."""
    from panel.billing.subscription_info import subscription_json

    svc = _service_or_404(service_id)
    if svc is None:
        return error_response(404, "not_found", "no such service")
    return jsonify({"subscription": subscription_json(svc)})


@bp.post("/services/<int:service_id>/cancel")
def cancel_service(service_id):
    """POST /api/v1/services/<id>/cancel ``{"at_period_end": true}`` (default true): end a paid
    subscription at the period's end, or now (``false``: the service is terminated and its
    subscription cancelled, refunded as configured); an unpaid order is cancelled; a free,
    complimentary or invoiced service is terminated. 202 ``{"message", "subscription"}``."""
    from panel import lifecycle
    from panel.billing.changes import cancel
    from panel.billing.subscription_info import subscription_json

    svc = _service_or_404(service_id)
    if svc is None:
        return error_response(404, "not_found", "no such service")
    body = request.get_json(silent=True)
    if body is None and request.content_length:
        return error_response(400, "bad_request", 'send a JSON object: {"at_period_end": true}')
    body = body if isinstance(body, dict) else {}
    at_period_end = body.get("at_period_end", True)
    if not isinstance(at_period_end, bool):
        return error_response(422, "invalid", "at_period_end must be true or false",
                              {"at_period_end": "must be true or false"})
    try:
        message = cancel(svc, actor=f"api:{g.api_user.email}", at_period_end=at_period_end)
    except lifecycle.LifecycleError as exc:
        return error_response(409, "conflict", str(exc))
    return _accepted({"message": message, "subscription": subscription_json(svc)})


@bp.post("/services/<int:service_id>/plan")
def change_service_plan(service_id):
    """POST /api/v1/services/<id>/plan ``{"plan": slug, "term": "yearly"}``: move the service to
    another plan or term (prorated; from a free plan through Checkout: ``checkout_url``; to a free
    plan at the end of the paid period). 202 ``{"message", "checkout_url", "subscription"}``;
    409/422 with a field-level message when the change cannot be made (nothing was charged)."""
    from panel.billing.changes import ChangeError, change_plan
    from panel.billing.subscription_info import subscription_json
    from panel.models import Plan

    svc, body, error = _billing_request(service_id, '{"plan": slug, "term": "monthly"}')
    if error is not None:
        return error
    slug, term = body.get("plan"), body.get("term")
    if not isinstance(slug, str) or not slug:
        return error_response(422, "invalid", "plan is required", {"plan": "is required"})
    if term is not None and not isinstance(term, str):
        return error_response(422, "invalid", "term must be a string", {"term": "must be a string"})
    plan = Plan.by_slug(slug)
    if plan is None or not plan.active:
        return error_response(404, "plan_not_found", f"there is no plan {slug!r}", {"plan": "unknown plan"})
    try:
        result = change_plan(svc, plan, term=term or None, actor=f"api:{g.api_user.email}")
    except ChangeError as exc:
        return _change_error(exc)
    return _accepted({"message": result["message"], "checkout_url": result.get("checkout_url"),
                      "subscription": subscription_json(svc)})


@bp.post("/services/<int:service_id>/addons")
def change_service_addons(service_id):
    """POST /api/v1/services/<id>/addons ``{"add": [slug...], "remove": [slug...]}``: change the
    add-ons of an active service (prorated subscription items, then the backend applies them).
    202 ``{"message", "subscription"}``; 409/422 with ``fields.addons`` when refused (nothing was
    charged)."""
    from panel.billing.changes import ChangeError, change_addons
    from panel.billing.subscription_info import subscription_json

    svc, body, error = _billing_request(service_id, '{"add": [...], "remove": [...]}')
    if error is not None:
        return error
    lists = {}
    for key in ("add", "remove"):
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return error_response(422, "invalid", f"{key} must be a list of add-on slugs",
                                  {key: "must be a list of add-on slugs"})
        lists[key] = value
    try:
        message = change_addons(svc, lists["add"], lists["remove"], actor=f"api:{g.api_user.email}")
    except ChangeError as exc:
        return _change_error(exc)
    return _accepted({"message": message, "subscription": subscription_json(svc)})


@bp.get("/openapi.json")
def openapi():
    """GET /api/v1/openapi.json: the OpenAPI 3.1 document."""
    return jsonify(openapi_document(plugins().backends))

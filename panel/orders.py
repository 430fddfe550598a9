"""Placing orders: the one path shared by the web UI and the JSON API."""
from __future__ import annotations

from dataclasses import dataclass, field

from panel import lifecycle
from sqlalchemy.exc import IntegrityError

from panel.backends import (BackendError, NoCapacityError, PermanentBackendError, ServiceSpec,
                            ValidationError)
from panel.extensions import db
from panel.models import Plan, Service, User
from panel.plugins import BackendNotConfigured, backend_class, get_backend, is_enabled


@dataclass
class OrderError(Exception):
    """An order that cannot be placed. ``status`` is the HTTP status the API answers with,
    ``code`` a stable machine word, ``fields`` per-field messages for the order form."""

    status: int
    code: str
    message: str
    fields: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


@dataclass
class OrderResult:
    """A placed order: the service and, for a paid plan, the Stripe Checkout URL."""
    service: Service
    checkout_url: str | None = None


def orderable_plans() -> list[Plan]:
    """Active plans whose backend is installed and enabled, in catalog order."""
    plans = db.session.scalars(db.select(Plan).where(Plan.active.is_(True))
                               .order_by(Plan.sort_order, Plan.id)).all()
    out = []
    for plan in plans:
        try:
            backend_class(plan.backend)
        except BackendNotConfigured:
            continue
        if is_enabled(plan.backend):
            out.append(plan)
    return out


def get_plan(slug: str) -> Plan:
    """The active, orderable plan ``slug``; raises ``OrderError`` (404 or 409)."""
    plan = Plan.by_slug(slug or "")
    if plan is None or not plan.active:
        raise OrderError(404, "plan_not_found", f"there is no plan {slug!r}", {"plan": "unknown plan"})
    try:
        backend_class(plan.backend)
    except BackendNotConfigured:
        raise OrderError(409, "backend_unavailable", f"plan {slug!r} cannot be ordered right now") from None
    if not is_enabled(plan.backend):
        raise OrderError(409, "backend_unavailable", f"plan {slug!r} cannot be ordered right now")
    return plan


def validate_params(plan: Plan, params: dict | None) -> dict:
    """The backend's validation of order params; raises ``OrderError`` 422 with field messages."""
    if params is not None and not isinstance(params, dict):
        raise OrderError(422, "invalid_params", "params must be an object", {"params": "must be an object"})
    try:
        backend = get_backend(plan.backend)
        return backend.validate_order_params(params or {}, dict(plan.options or {}))
    except ValidationError as exc:
        raise OrderError(422, "invalid_params", "some order fields are invalid", exc.errors) from None
    except BackendError as exc:
        raise OrderError(409, "backend_unavailable", f"this plan cannot be ordered right now: {exc}") from None


def needs_verified_email(user: User) -> bool:
    """Whether ``user`` must confirm their email before ordering (``PANEL_EMAIL_VERIFICATION``;
    operators never)."""
    from flask import current_app

    return (current_app.config.get("EMAIL_VERIFICATION") == "required" and not user.is_operator
            and user.email_verified_at is None)


def place_order(user: User, slug: str, params: dict | None, *, actor: str,
                record_with=None) -> OrderResult:
    """Validate and record an order for ``user``. A free plan starts provisioning; a paid plan
    goes through billing (``panel.billing``) and returns a Checkout URL. ``record_with(service)``
    adds rows that must commit with the new service (``lifecycle.create_service``).

    Raises ``OrderError``: 403 email not confirmed yet (``PANEL_EMAIL_VERIFICATION``), 404 unknown plan, 422 invalid params (``fields``), 409 no capacity or
    billing not configured.
    """
    if needs_verified_email(user):
        raise OrderError(403, "email_unverified", "confirm your email address first: open the link we "
                         "sent you (your account page can send it again)")
    plan = get_plan(slug)
    clean = validate_params(plan, params)
    backend = get_backend(plan.backend)
    claim = claim_for(backend, plan, clean, user)
    try:
        backend.check_capacity(dict(plan.options or {}), clean)
    except NoCapacityError as exc:
        raise OrderError(409, "no_capacity", f"this plan is sold out right now: {exc}") from None
    except BackendError as exc:
        raise OrderError(409, "backend_unavailable", f"this plan cannot be ordered right now: {exc}") from None
    if not plan.is_free:
        from panel import billing

        if not billing.configured():
            raise OrderError(409, "billing_not_configured",
                             "billing not configured: paid plans cannot be ordered yet")
    try:
        if plan.is_free:
            return OrderResult(lifecycle.create_service(user, plan, clean, actor=actor,
                                                        claim_key=claim[1] if claim else None,
                                                        record_with=record_with))
        from panel import billing

        return billing.start_checkout(user, plan, clean, actor=actor, claim_key=claim[1] if claim else None,
                                      record_with=record_with)
    except IntegrityError:  # another order took the same name between our check and the insert
        db.session.rollback()
        raise _taken(claim) from None


def _taken(claim: tuple[str, str] | None) -> OrderError:
    field_name, value = claim or ("params", "this name")
    return OrderError(422, "invalid_params", "some order fields are invalid",
                      {field_name: f"{value} is already in use"})


def claim_for(backend, plan: Plan, params: dict, user: User) -> tuple[str, str] | None:
    """The remote name the order would take (``Backend.claim_key``), refused with a field-level
    422 when a live service of the same backend holds it, when it is a hostname outside the
    operator's domains that the customer has not verified, or when it is another customer's
    default name (``panel.names``)."""
    draft = ServiceSpec(service_id=0, external_id="", plan=plan.slug, options=dict(plan.options or {}),
                        params=dict(params), customer_id=user.id, customer_email=user.email)
    try:
        claim = backend.claim_key(draft)
    except PermanentBackendError as exc:
        raise OrderError(422, "invalid_params", str(exc), exc.fields or {"params": str(exc)}) from None
    except BackendError as exc:
        raise OrderError(409, "backend_unavailable", f"this plan cannot be ordered right now: {exc}") from None
    if claim is None:
        return None
    from panel import names

    problems = names.check_claim(backend, plan, claim, user)
    if problems:
        raise OrderError(422, "invalid_params", "some order fields are invalid", problems)
    holder = db.session.scalar(db.select(Service).where(Service.backend == plan.backend,
                                                        Service.claim_key == claim[1]))
    if holder is not None:
        raise _taken(claim)
    return claim

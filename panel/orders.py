"""Placing orders: the one path shared by the web UI and the JSON API."""
from __future__ import annotations

from dataclasses import dataclass, field

from panel import lifecycle
from sqlalchemy.exc import IntegrityError

from panel.addons import AddonOptionError, in_catalog_order, options_for
from panel.backends import (BackendError, NoCapacityError, PermanentBackendError, ServiceSpec,
                            ValidationError)
from panel.extensions import db
from panel.models import Addon, Plan, Service, ServiceAddon, User
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


def live_count(user: User, plan: Plan) -> int:
    """How many of ``user``'s services on ``plan`` are not terminated or cancelled."""
    return db.session.scalar(db.select(db.func.count()).select_from(Service).where(
        Service.user_id == user.id, Service.plan_id == plan.id,
        Service.status.not_in(lifecycle.FINAL))) or 0


def check_limit(user: User, plan: Plan) -> None:
    """Raise ``OrderError`` 409 ``limit_reached`` when ``user`` has ``plan.max_per_customer`` live
    services of ``plan`` already."""
    if plan.max_per_customer and live_count(user, plan) >= plan.max_per_customer:
        raise OrderError(409, "limit_reached",
                         f"you already have {plan.max_per_customer} {plan.name} service"
                         f"{'s' if plan.max_per_customer > 1 else ''}: that is the limit per customer")


def default_billing_mode(user: User, plan: Plan) -> str:
    """``free`` for a free plan, ``complimentary`` for a paid plan ordered by a complimentary
    account (seed 003's plankowner), else ``stripe``."""
    if plan.is_free:
        return "free"
    from panel import billing

    return "complimentary" if billing.account_is_complimentary(user) else "stripe"


def resolve_term(plan: Plan, term: str | None, mode: str) -> str | None:
    """The billing term of an order: ``None`` for a free plan; the term asked for, or the plan's
    default term, for a paid one. Raises ``OrderError`` 422 (``fields["term"]``)."""
    if plan.is_free:
        if term:
            raise OrderError(422, "invalid_term", "a free plan has no billing term", {"term": "must be empty for a free plan"})
        return None
    term = term or plan.default_term
    if term not in plan.terms:
        sold = ", ".join(plan.terms)
        raise OrderError(422, "invalid_term", f"{plan.name} is sold {sold}", {"term": f"must be one of {sold}"})
    return term


def resolve_addons(plan: Plan, slugs, term: str | None) -> list[Addon]:
    """The add-ons asked for (a list of slugs), each offered with ``plan`` and on ``term``, in
    catalog order. Raises ``OrderError`` 422 naming the add-on (``fields["addons"]``)."""
    if slugs is None:
        return []
    if not isinstance(slugs, (list, tuple)) or not all(isinstance(s, str) for s in slugs):
        raise OrderError(422, "invalid_addons", "addons must be a list of add-on slugs",
                         {"addons": "must be a list of add-on slugs"})
    found = []
    for slug in dict.fromkeys(slugs):
        addon = Addon.by_slug(slug)
        if addon is None or not addon.active or slug not in (plan.addons or []):
            raise OrderError(422, "invalid_addons", f"{slug} is not offered with {plan.name}",
                             {"addons": f"{slug} is not offered with this plan"})
        if not addon.offered_on(term):
            what = (f"{addon.name} has no {term} price: choose {' or '.join(addon.term_prices)} or leave it out"
                    if term else f"{addon.name} is a paid add-on: it needs a paid plan")
            raise OrderError(422, "invalid_addons", what, {"addons": what})
        found.append(addon)
    return in_catalog_order(found)


def checked_options(backend, plan: Plan, addons: list[Addon]) -> dict:
    """The plan's options with ``addons`` merged in, validated by the backend's ``PlanOptions``
    (``Backend.validate_plan_options``). Raises ``OrderError`` 422 (``fields["addons"]``) before
    anything is charged."""
    try:
        merged = options_for(plan, addons)
        if addons:
            merged = backend.validate_plan_options(merged)
        return merged
    except (AddonOptionError, ValidationError) as exc:
        detail = "; ".join(f"{k}: {v}" for k, v in exc.errors.items()) if isinstance(exc, ValidationError) else str(exc)
        raise OrderError(422, "invalid_addons", f"these add-ons do not fit {plan.name} ({detail})",
                         {"addons": f"these add-ons do not fit this plan ({detail})"}) from None
    except BackendError as exc:
        raise OrderError(409, "backend_unavailable", f"this plan cannot be ordered right now: {exc}") from None


def addon_rows(addons: list[Addon], term: str | None) -> list[ServiceAddon]:
    """``ServiceAddon`` rows (state ``adding``) for an order, with the price, term and amount in
    force (amounts from the Stripe price cache when billing is configured)."""
    from panel import billing

    rows = []
    for addon in addons:
        price_id = addon.price_for(term)
        amount, currency = billing.price_snapshot(price_id)
        rows.append(ServiceAddon(addon=addon, state="adding", price_id=price_id, term=term if price_id else None,
                                 unit_amount=amount, currency=currency))
    return rows


def place_order(user: User, slug: str, params: dict | None, *, actor: str, term: str | None = None,
                addons=None, billing_mode: str | None = None, record_with=None) -> OrderResult:
    """Validate and record an order for ``user``: plan ``slug`` on billing ``term`` (default: the
    plan's) with ``addons`` (add-on slugs). A free, complimentary or to-be-invoiced order starts
    provisioning; a paid one (``billing_mode`` ``stripe``, the default for paid plans) goes
    through billing (``panel.billing``) and returns a Checkout URL with one line item per price.
    ``billing_mode`` ``complimentary`` or ``invoice`` is for operators ordering for a customer.
    ``record_with(service)`` adds rows that must commit with the new service
    (``lifecycle.create_service``).

    Raises ``OrderError``: 403 email not confirmed yet (``PANEL_EMAIL_VERIFICATION``), 404 unknown
    plan, 422 invalid params, term or add-ons (``fields``), 409 no capacity, limit reached or billing
    not configured.
    """
    if needs_verified_email(user):
        raise OrderError(403, "email_unverified", "confirm your email address first: open the link we "
                         "sent you (your account page can send it again)")
    plan = get_plan(slug)
    check_limit(user, plan)
    mode = billing_mode or default_billing_mode(user, plan)
    if plan.is_free:
        mode = "free"
    term = resolve_term(plan, term, mode)
    chosen = resolve_addons(plan, addons, term)
    clean = validate_params(plan, params)
    backend = get_backend(plan.backend)
    options = checked_options(backend, plan, chosen)
    claim = claim_for(backend, plan, clean, user)
    try:
        backend.check_capacity(options, clean)
    except NoCapacityError as exc:
        raise OrderError(409, "no_capacity", f"this plan is sold out right now: {exc}") from None
    except BackendError as exc:
        raise OrderError(409, "backend_unavailable", f"this plan cannot be ordered right now: {exc}") from None
    if mode == "stripe":
        from panel import billing

        if not billing.configured():
            raise OrderError(409, "billing_not_configured",
                             "billing not configured: paid plans cannot be ordered yet")
    rows = addon_rows(chosen, term)
    try:
        if mode != "stripe":
            return OrderResult(lifecycle.create_service(user, plan, clean, actor=actor,
                                                        claim_key=claim[1] if claim else None, billing_mode=mode,
                                                        term=term, addons=rows, record_with=record_with))
        from panel import billing

        return billing.start_checkout(user, plan, clean, actor=actor, claim_key=claim[1] if claim else None,
                                      term=term, addons=rows, record_with=record_with)
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


def order_signup_plan(user: User) -> OrderResult | None:
    """Order ``PANEL_SIGNUP_PLAN`` for a new account (seed 003's ``new_crew_tier``) with
    ``PANEL_SIGNUP_PARAMS`` (``{user_id}`` in a string value becomes ``user.id``). Only a free
    plan (or any plan for a complimentary account) is ordered: nobody is charged at sign-up.
    Returns the ``OrderResult``, or ``None`` when none is configured or it cannot be ordered (the
    reason is logged for operators; the sign-up itself never fails)."""
    import logging

    from flask import current_app

    slug = current_app.config.get("SIGNUP_PLAN")
    if not slug or needs_verified_email(user):  # ordered once the address is confirmed
        return None
    log = logging.getLogger(__name__)
    params = {k: (v.replace("{user_id}", str(user.id)) if isinstance(v, str) else v)
              for k, v in (current_app.config.get("SIGNUP_PARAMS") or {}).items()}
    try:
        plan = get_plan(slug)
        if default_billing_mode(user, plan) == "stripe":
            log.warning("PANEL_SIGNUP_PLAN %s is a paid plan: not ordered at sign-up (use a free plan)", slug)
            return None
        return place_order(user, slug, params, actor="signup")
    except OrderError as exc:
        log.warning("the sign-up plan %s could not be ordered for user %s: %s %s", slug, user.id, exc.message,
                    exc.fields or "")
        return None

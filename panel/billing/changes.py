"""Billing changes to a service: ending it stops the charge, add-ons on a running service, plan
changes in every direction, complimentary services and accounts, and what a paused or ended
subscription does (the plan's ``on_cancel``).

Everything here decides and records; Stripe calls that change a charge are ``BillingTask`` rows
(``panel.billing.tasks``) and backend calls are lifecycle operations. Every check that can refuse
(the plan and add-ons are offered on the term, the merged options pass the backend's schema and
``Backend.check_change_plan``, the per-customer limit) runs before anything is charged, and
raises ``ChangeError`` whose message a customer can read.
"""
from __future__ import annotations

import logging
import uuid
from typing import Iterable

from flask import current_app

from panel import addons as addon_state
from panel import lifecycle
from panel.backends import BackendError, NoCapacityError, PermanentBackendError, TransientBackendError
from panel.billing import tasks
from panel.billing.models import TASK_UNFINISHED, AccountBilling, BillingTask, Subscription
from panel.extensions import db
from panel.models import Addon, Plan, Service, ServiceAddon, User
from panel.models.base import utcnow
from panel.plugins import backend_class, get_backend

log = logging.getLogger(__name__)

ENDED = ("canceled", "incomplete_expired")


class ChangeError(Exception):
    """A change that cannot be made; ``str()`` is for the customer, ``status`` the HTTP status the
    API answers (409 or 422), ``field`` the form field at fault (``plan``, ``term``, ``addons``)."""

    def __init__(self, message: str, *, status: int = 409, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


# --------------------------------------------------------------------------- lookups

def subscription_for(service: Service) -> Subscription | None:
    """The ``Subscription`` row of ``service`` (``None`` when it never had one)."""
    return db.session.scalar(db.select(Subscription).where(Subscription.service_id == service.id))


def live_subscription(service: Service) -> Subscription | None:
    """The service's subscription while it can still charge (linked to Stripe, not ended)."""
    sub = subscription_for(service)
    if sub is None or not sub.stripe_subscription_id or sub.deleted_at is not None or sub.status in ENDED:
        return None
    return sub


def plans_with_price(price_id: str, backend: str | None = None) -> list[Plan]:
    """Plans (of ``backend``) that sell ``price_id`` on some term, active ones first."""
    query = db.select(Plan).order_by(Plan.active.desc(), Plan.id)
    if backend:
        query = query.where(Plan.backend == backend)
    return [p for p in db.session.scalars(query) if price_id in p.term_prices.values()]


def plan_prices() -> set[str]:
    """Every price id any plan sells (to tell a subscription's plan item from its add-on items)."""
    out: set[str] = set()
    for plan in db.session.scalars(db.select(Plan)):
        out.update(plan.term_prices.values())
    return out


def term_of_price(plan: Plan, price_id: str | None) -> str | None:
    """The term on which ``plan`` sells ``price_id``."""
    return next((t for t, p in plan.term_prices.items() if p == price_id), None)


def _never_ran(service: Service) -> bool:
    """Whether the service never became active (its provision never succeeded)."""
    return not any(op.action == "provision" and op.state == "succeeded" for op in service.operations)


def default_refund(service: Service) -> str:
    """What stopping a subscription gives back when nobody chose: ``full`` (or ``full_credit``) for a
    paid order that never ran (``PANEL_FAILED_ORDER_REFUND``), else ``PANEL_TERMINATE_REFUND``."""
    if _never_ran(service):
        return {"refund": "full", "credit": "full_credit", "none": "none"}[current_app.config["FAILED_ORDER_REFUND"]]
    return current_app.config["TERMINATE_REFUND"]


# --------------------------------------------------------------------------- the charge stops

def stop_billing(service: Service, *, actor: str, refund: str | None = None, why: str = "") -> BillingTask | None:
    """Record the cancellation of the service's live subscription, now (a ``cancel_subscription``
    task; ``refund``: ``none``, ``credit``, ``refund``, ``full`` or ``full_credit``, default
    ``default_refund``). Idempotent: an open cancellation task is returned as it is; ``None`` when
    nothing charges. A cancellation of the same subscription that failed is returned too: it waits,
    shown to operators, for their retry (a second task could refund or credit twice; e.g. the
    status hook of the termination that follows a refused refund). Flushes; the caller commits
    (``tasks.commit_and_hand_over``)."""
    sub = live_subscription(service)
    if sub is None:
        return None
    earlier = [t for t in db.session.scalars(db.select(BillingTask).where(
        BillingTask.service_id == service.id, BillingTask.kind == "cancel_subscription",
        BillingTask.state.in_((*TASK_UNFINISHED, "failed"))).order_by(BillingTask.id))
        if t.payload.get("subscription") == sub.stripe_subscription_id]
    unfinished = [t for t in earlier if t.state != "failed"]
    if unfinished:
        return unfinished[0]
    if earlier:
        return earlier[-1]  # the last failed one
    refund = refund or default_refund(service)
    sub.end_action = sub.end_action or "keep"
    return tasks.record("cancel_subscription", service,
                        {"subscription": sub.stripe_subscription_id, "refund": refund,
                         "at": int(utcnow().timestamp()), "reason": why or "service ended"}, actor=actor)


def on_status_changed(service_id: int, old: str, new: str) -> None:
    """The ``service_status_changed`` reaction: a service that is terminating, terminated or
    cancelled stops being charged, whoever ended it (operator, customer, API, billing cron, a
    failed provisioning that was then cancelled)."""
    if new not in ("terminating", "terminated", "cancelled"):
        return
    service = db.session.get(Service, service_id)
    if service is None:
        return
    task = stop_billing(service, actor="billing", why=f"service {new}")
    if task is not None:
        tasks.commit_and_hand_over()


def stop_orphans() -> list[int]:
    """Services that ended while their subscription still charges and no cancellation is on its way
    (the status hook was lost with its process): record the cancellation. Returns their ids. A
    cancellation that failed is not recorded again: it waits, shown to operators, for their retry
    (a second task could refund or credit twice)."""
    rows = db.session.execute(
        db.select(Service, Subscription).join(Subscription, Subscription.service_id == Service.id)
        .where(Service.status.in_(("terminating", "terminated", "cancelled")),
               Subscription.stripe_subscription_id.is_not(None), Subscription.deleted_at.is_(None))).all()
    done = []
    for service, sub in rows:
        if sub.status in ENDED:
            continue
        already = db.session.scalar(db.select(BillingTask.id).where(
            BillingTask.service_id == service.id, BillingTask.kind == "cancel_subscription",
            BillingTask.state.in_(("queued", "running", "succeeded", "failed"))).limit(1))
        if already is None and stop_billing(service, actor="billing", why="service ended (found by the sweep)"):
            done.append(service.id)
    if done:
        tasks.commit_and_hand_over()
    return done


def terminate(service: Service, *, actor: str, refund: str | None = None, at_period_end: bool = False,
              detail: str = "") -> str:
    """End ``service``: at once (the subscription is cancelled with ``refund``, then the backend
    deletes the service) or, when it has a live subscription and ``at_period_end``, when the
    paid period ends (``end_action`` ``terminate``). A never-paid order is cancelled. Commits.
    Returns a sentence; raises ``lifecycle.LifecycleError``."""
    if service.status == "pending_payment":
        lifecycle.cancel(service, actor=actor, detail=detail or "order cancelled")
        return "Order cancelled."
    sub = live_subscription(service)
    if at_period_end and sub is not None:
        sub.end_action = "terminate"
        if not sub.cancel_at_period_end and not tasks.open_tasks(service, "cancel_at_period_end"):
            tasks.record("cancel_at_period_end", service, {"subscription": sub.stripe_subscription_id}, actor=actor)
        lifecycle.note(service, f"termination at the end of the paid period requested by {actor}", actor=actor,
                       kind="billing")
        tasks.commit_and_hand_over()
        return "The service ends, and is deleted, when the paid period is over."
    stop_billing(service, actor=actor, refund=refund, why=detail or f"terminated by {actor}")
    try:
        lifecycle.request(service, "terminate", actor=actor, detail=detail or f"terminated by {actor}")
    except lifecycle.LifecycleError:
        db.session.rollback()
        raise
    tasks.commit_and_hand_over()
    return "The service is being removed."


def cancel(service: Service, *, actor: str, at_period_end: bool = True, refund: str | None = None) -> str:
    """A customer's cancel (web and ``POST /api/v1/services/<id>/cancel``): an unpaid order is
    cancelled; a paid subscription ends at the end of the period (``at_period_end``, the plan's
    ``on_cancel`` then applies) or now; anything else (free, complimentary, invoiced) is
    terminated now. Commits; returns a sentence; raises ``lifecycle.LifecycleError``."""
    if service.status == "pending_payment":
        lifecycle.cancel(service, actor=actor)
        return "Order cancelled."
    sub = live_subscription(service)
    if sub is not None and at_period_end:
        if sub.cancel_at_period_end or tasks.open_tasks(service, "cancel_at_period_end"):
            return "Your subscription already ends at the close of the billing period."
        tasks.schedule("cancel_at_period_end", service, {"subscription": sub.stripe_subscription_id}, actor=actor)
        lifecycle.note(service, f"cancellation at period end requested by {actor}", actor=actor, kind="billing")
        return "Your subscription will end at the close of the billing period."
    return terminate(service, actor=actor, refund=refund, detail=f"cancelled by {actor}")


# --------------------------------------------------------------------------- checks

def _backend_check(service: Service, plan: Plan, chosen: list[Addon]) -> dict:
    """Merged options of ``plan`` with ``chosen``, validated by the backend and its
    ``check_change_plan``; raises ``ChangeError`` before anything is charged."""
    from panel.orders import OrderError, checked_options

    backend = get_backend(service.backend)
    try:
        options = checked_options(backend, plan, chosen)
    except OrderError as exc:
        raise ChangeError(exc.message, status=exc.status, field="addons") from None
    try:
        backend.check_change_plan(lifecycle.spec_for(service), options)
    except TransientBackendError as exc:
        raise ChangeError(f"the change cannot be checked right now ({exc}); nothing was charged, try again soon") from None
    except NoCapacityError as exc:
        raise ChangeError(f"there is no room for this change right now: {exc}") from None
    except PermanentBackendError as exc:
        raise ChangeError(f"this change cannot be made: {exc}") from None
    except BackendError as exc:
        raise ChangeError(f"this change cannot be made right now: {exc}") from None
    return options


def _require_changeable(service: Service) -> None:
    if service.status != "active":
        raise ChangeError(f"the service is {service.status.replace('_', ' ')}: changes can be made while it is active")
    if not backend_class(service.backend).supports("change_plan"):
        raise ChangeError("this kind of service cannot change plan or add-ons")


def _snapshot_row(row: ServiceAddon, term: str | None) -> None:
    from panel import billing

    row.price_id = row.addon.price_for(term) if term else None
    row.term = term if row.price_id else None
    row.unit_amount, row.currency = billing.price_snapshot(row.price_id)


def _keep_addons(service: Service, kept: set[str], term: str | None) -> None:
    """Add-on rows after a plan, term or billing change: those in ``kept`` take the price of
    ``term``; the others go (an ``adding`` one is dropped, an applied one becomes ``removing``
    until the backend confirms). Does not commit."""
    for row in list(service.addons):
        if row.addon.slug in kept:
            _snapshot_row(row, term)
        elif row.state == "adding":
            service.addons.remove(row)
        else:
            row.state = "removing"


# --------------------------------------------------------------------------- add-ons

def change_addons(service: Service, add: Iterable[str] = (), remove: Iterable[str] = (), *, actor: str) -> str:
    """Add and remove add-ons on an active service (web and ``POST /api/v1/services/<id>/addons``).

    Checks first (offered with the plan and on its term; a complimentary service takes only free
    add-ons; the merged options pass the backend), then records the rows and, for paid add-ons on
    a Stripe subscription, one ``add_item``/``remove_item`` task each (prorated); once Stripe has
    them the backend applies the merged options through ``change_plan``. Free, complimentary and
    invoiced services go to the backend at once. The add-on log is written when the backend
    confirms. Commits; returns a sentence; raises ``ChangeError``."""
    add, remove = list(dict.fromkeys(add or [])), list(dict.fromkeys(remove or []))
    if not add and not remove:
        raise ChangeError("choose an add-on to add or remove", status=422, field="addons")
    _require_changeable(service)
    plan = service.plan
    rows = {row.addon.slug: row for row in service.addons}
    wanted = {row.addon.slug for row in addon_state.wanted(service)}
    sub = live_subscription(service) if service.billing_mode == "stripe" else None
    if service.billing_mode == "stripe" and sub is None:
        raise ChangeError("this service has no running subscription: add-ons can be bought once it is paid for")
    to_add: list[Addon] = []
    for slug in add:
        addon = Addon.by_slug(slug)
        if addon is None or not addon.active or slug not in (plan.addons or []):
            raise ChangeError(f"{slug} is not offered with {plan.name}", status=422, field="addons")
        if slug in wanted:
            raise ChangeError(f"{addon.name} is on this service already", status=422, field="addons")
        if slug in rows:  # on its way out: wait until that is done
            raise ChangeError(f"{addon.name} is being removed right now; try again in a minute", field="addons")
        if not addon.is_free:
            if service.billing_mode == "complimentary":
                raise ChangeError(f"{addon.name} is a paid add-on: start paying for this service to add it", field="addons")
            if service.billing_mode == "free":
                raise ChangeError(f"{addon.name} is a paid add-on: it needs a paid plan", field="addons")
            if not addon.price_for(service.term):
                raise ChangeError(f"{addon.name} has no {service.term} price", status=422, field="addons")
        to_add.append(addon)
    for slug in remove:
        if slug not in wanted:
            raise ChangeError(f"{slug} is not on this service", status=422, field="addons")
    target = [Addon.by_slug(s) for s in (wanted - set(remove)) | {a.slug for a in to_add}]
    _backend_check(service, plan, target)
    recorded = []
    for addon in to_add:
        row = ServiceAddon(addon=addon, state="adding")
        _snapshot_row(row, service.term)
        service.addons.append(row)
        db.session.flush()
        if sub is not None and row.price_id:
            recorded.append(tasks.record("add_item", service, {"subscription": sub.stripe_subscription_id,
                                                               "price": row.price_id, "addon": addon.slug}, actor=actor))
    for slug in remove:
        row = rows[slug]
        if row.state == "adding":  # not applied yet and not charged: just forget it
            open_adds = [t for t in tasks.open_tasks(service, "add_item") if t.payload.get("price") == row.price_id]
            if not open_adds:
                service.addons.remove(row)
                continue
        row.state = "removing"
        if sub is not None and row.price_id:
            recorded.append(tasks.record("remove_item", service, {"subscription": sub.stripe_subscription_id,
                                                                  "price": row.price_id, "addon": slug}, actor=actor))
    summary = ", ".join([f"+{a.slug}" for a in to_add] + [f"-{s}" for s in remove])
    lifecycle.note(service, f"add-ons {summary} requested by {actor}", actor=actor, kind="billing")
    if not recorded:
        apply_to_backend(service, actor=actor, why=f"add-ons {summary}")
        return "Your add-ons are being applied."
    tasks.commit_and_hand_over()
    return "Your add-ons are being changed; the subscription is prorated."


def apply_to_backend(service: Service, *, actor: str, why: str) -> None:
    """Ask the backend to apply the service's wanted add-ons (``change_plan`` on its plan), unless
    another add-on or price task of the service is still on its way (the last one applies all).
    Commits."""
    service = db.session.get(Service, service.id)
    pending = [t for t in tasks.open_tasks(service) if t.kind in ("add_item", "remove_item", "change_prices")]
    if pending:
        lifecycle.commit()
        return
    slugs = [row.addon.slug for row in addon_state.wanted(service)]
    try:
        lifecycle.request(service, "change_plan", actor=actor, detail=why,
                          payload={"plan_id": service.plan_id, "addons": slugs})
    except lifecycle.LifecycleError as exc:
        lifecycle.note(service, f"add-ons not applied: {exc}", actor="billing", kind="billing")


# --------------------------------------------------------------------------- plan changes

def change_options(service: Service) -> list[Plan]:
    """The plans ``service`` may move to: active, same backend, not its own, the per-customer limit
    allowing."""
    from panel.orders import live_count

    rows = db.session.scalars(db.select(Plan).where(Plan.active.is_(True), Plan.backend == service.backend,
                                                    Plan.id != service.plan_id)
                              .order_by(Plan.sort_order, Plan.id)).all()
    return [p for p in rows if not p.max_per_customer or live_count(service.user, p) < p.max_per_customer]


def change_plan(service: Service, plan: Plan, *, term: str | None = None, actor: str) -> dict:
    """Move ``service`` to ``plan`` (``term``: the billing term; default the current one or the
    plan's). Returns ``{"message", "checkout_url"}`` (a URL when the customer must pay through
    Checkout first). Commits; raises ``ChangeError``.

    * to a free plan: a live subscription ends at the period's end and the service then moves to
      the free plan, keeping its data (``end_action`` ``downgrade:<slug>``); otherwise it moves now;
    * paid to paid on a live subscription: one ``change_prices`` task moves every item (the plan's
      and the add-ons' prices on the new term; add-ons the new plan does not offer are removed),
      prorated; then the backend's ``change_plan``;
    * free, complimentary or ended to paid: Checkout for the same service (``start_upgrade``);
      once paid the backend's ``change_plan`` runs, no reprovision;
    * invoiced: the backend changes now, the term is recorded for the invoice.
    """
    _require_changeable(service)
    paying = service.billing_mode == "stripe" and live_subscription(service) is not None
    if plan.id == service.plan_id and (plan.is_free or (paying and (term or service.term) == service.term)
                                       or service.billing_mode == "invoice" and (term or service.term) == service.term):
        raise ChangeError("the service is on this plan already", status=422, field="plan")
    if plan.backend != service.backend or not plan.active:
        raise ChangeError("that plan is not available for this service", status=422, field="plan")
    if plan.id != service.plan_id and plan.id not in {p.id for p in change_options(service)}:
        raise ChangeError(f"you already have the most {plan.name} services allowed per customer", field="plan")
    keep = [row.addon for row in addon_state.wanted(service) if row.addon.slug in (plan.addons or [])]
    sub = live_subscription(service) if service.billing_mode == "stripe" else None
    if plan.is_free:
        if term:
            raise ChangeError("a free plan has no billing term", status=422, field="term")
        keep = [a for a in keep if a.is_free]
        _backend_check(service, plan, keep)
        if sub is not None:
            sub.end_action = f"downgrade:{plan.slug}"
            if not sub.cancel_at_period_end and not tasks.open_tasks(service, "cancel_at_period_end"):
                tasks.record("cancel_at_period_end", service, {"subscription": sub.stripe_subscription_id}, actor=actor)
            lifecycle.note(service, f"move to {plan.slug} at the end of the paid period requested by {actor}",
                           actor=actor, kind="billing")
            tasks.commit_and_hand_over()
            when = sub.ends_on.strftime("%Y-%m-%d") if sub.ends_on else "the end of the paid period"
            return {"message": f"Your service moves to {plan.name} on {when}, when the paid period ends.",
                    "checkout_url": None}
        _move_now(service, plan, None, keep, mode="free", actor=actor)
        return {"message": f"Your service is moving to {plan.name}.", "checkout_url": None}
    term = term or (service.term if service.term in plan.terms else plan.default_term)
    if term not in plan.terms:
        raise ChangeError(f"{plan.name} is sold {', '.join(plan.terms)}", status=422, field="term")
    keep = [a for a in keep if a.offered_on(term)]
    _backend_check(service, plan, keep)
    if sub is not None:
        return _change_prices(service, sub, plan, term, keep, actor=actor)
    if service.billing_mode == "invoice":
        _move_now(service, plan, term, keep, mode="invoice", actor=actor)
        return {"message": f"Your service is moving to {plan.name}.", "checkout_url": None}
    from panel import billing

    if not billing.configured():
        raise ChangeError("billing is not configured: paid plans cannot be ordered yet")
    url = start_upgrade(service, plan, term, keep, actor=actor)
    return {"message": "Complete the payment to move to the new plan.", "checkout_url": url}


def _move_now(service: Service, plan: Plan, term: str | None, keep: list[Addon], *, mode: str, actor: str) -> None:
    service.billing_mode = mode
    service.term = term
    kept = {a.slug for a in keep}
    _keep_addons(service, kept, term)
    lifecycle.request(service, "change_plan", actor=actor, detail=f"plan change to {plan.slug} requested by {actor}",
                      payload={"plan_id": plan.id, "addons": sorted(kept)})


def _change_prices(service: Service, sub: Subscription, plan: Plan, term: str, keep: list[Addon], *, actor: str) -> dict:
    if tasks.open_tasks(service, "change_prices"):
        raise ChangeError("a plan change is on its way already; wait a minute")
    old_term = service.term
    moves = {}
    if sub.stripe_price:
        moves[sub.stripe_price] = plan.price_for(term)
    kept = {a.slug for a in keep}
    add = []
    for row in addon_state.wanted(service):
        if not row.price_id:
            continue
        moves[row.price_id] = row.addon.price_for(term) if row.addon.slug in kept else None
    for addon in keep:
        price = addon.price_for(term)
        if price and price not in moves.values() and not any(r.addon.slug == addon.slug and r.price_id for r in service.addons):
            add.append(price)
    metered = _metered_moves(service.plan, old_term, plan, term, moves, add)
    task = tasks.record("change_prices", service, {"subscription": sub.stripe_subscription_id, "prices": moves,
                                                   "add": add, "metered": metered, "plan_id": plan.id, "term": term,
                                                   "addons": sorted(kept)}, actor=actor)
    sub.requested_price = plan.price_for(term)
    lifecycle.note(service, f"plan change to {plan.slug} ({term}) requested by {actor} (prorated in Stripe)",
                   actor=actor, kind="billing")
    tasks.commit_and_hand_over()
    if old_term != term:
        return {"message": f"Plan change to {plan.name} ({term}) requested: the new billing period starts now.",
                "checkout_url": None, "task": task.id}
    return {"message": f"Plan change to {plan.name} requested; it applies once the payment provider confirms it.",
            "checkout_url": None, "task": task.id}


def _metered_moves(old_plan: Plan, old_term: str | None, plan: Plan, term: str, moves: dict, add: list) -> list[str]:
    """Fill ``moves`` (``{old price: new price or None}``) and ``add`` for the metered prices of a
    plan change (``checkout.metered_prices``): a metric priced on both plans moves to the new
    plan's price (kept when it is the same), one the new plan does not price is removed, a new one
    is added. Returns the new metered price ids (added without a quantity)."""
    from panel.billing.checkout import metered_prices

    before, after = metered_prices(old_plan, old_term), metered_prices(plan, term)
    for metric, price in before.items():
        if price not in moves:
            moves[price] = after.get(metric)
    for price in after.values():
        if price not in moves.values() and price not in add:
            add.append(price)
    return sorted(after.values())


def prices_changed(service: Service, task: BillingTask) -> None:
    """After a ``change_prices`` task: the subscription, the service's term and add-on rows follow
    the new prices; then the backend's ``change_plan`` (new plan and kept add-ons). Commits."""
    plan = db.session.get(Plan, task.payload["plan_id"])
    term = task.payload["term"]
    kept = set(task.payload.get("addons") or [])
    sub = subscription_for(service)
    if sub is not None and plan is not None:
        sub.stripe_price = plan.price_for(term)
        sub.term = term
        sub.requested_price = None
        # The task read the subscription at ``at`` (Unix seconds) and changed it: a subscription
        # event created before then (delivered late) describes the old prices and is skipped
        # instead of moving the plan back and forth.
        at = (task.result or {}).get("at")
        if at:
            sub.last_event_created = max(sub.last_event_created or 0, int(at))
    service.term = term
    _keep_addons(service, kept, term)
    try:
        lifecycle.request(service, "change_plan", actor=task.actor,
                          detail=f"plan change to {plan.slug if plan else '?'} ({term}) paid in Stripe",
                          payload={"plan_id": task.payload["plan_id"], "addons": sorted(kept)})
    except lifecycle.LifecycleError as exc:
        lifecycle.note(service, f"plan change paid in Stripe but not applied: {exc}", actor="billing", kind="billing")


def start_upgrade(service: Service, plan: Plan, term: str, keep: list[Addon], *, actor: str) -> str:
    """Open Checkout so a free (or complimentary, or lapsed) service starts paying for ``plan`` on
    ``term``, with ``keep`` add-ons; returns the Checkout URL. The same service keeps its data: when
    Stripe confirms, ``apply_paid_upgrade`` runs ``change_plan``. Commits; raises ``ChangeError``."""
    from panel.billing import checkout
    from panel.billing.stripe_api import BillingAPIError

    sub = subscription_for(service)
    try:
        customer_id = checkout.ensure_customer(service.user)
        session = checkout.open_session(service, customer_id, checkout.line_items(plan, term, keep),
                                        metadata={"panel_term": term, "panel_upgrade": plan.slug},
                                        key=f"panel-upgrade-{service.external_id}-{uuid.uuid4().hex[:12]}")
    except BillingAPIError as exc:
        db.session.rollback()
        raise ChangeError(checkout.checkout_error(exc).message) from None
    if sub is None:
        sub = Subscription(service_id=service.id, user_id=service.user_id)
        db.session.add(sub)
    sub.stripe_customer_id = customer_id
    sub.stripe_subscription_id = None
    sub.checkout_session_id = session["id"]
    sub.status = "checkout"
    sub.stripe_price = plan.price_for(term)
    sub.term = term
    sub.deleted_at = sub.terminate_at = sub.terminate_requested_at = sub.cancel_at = None
    sub.cancel_at_period_end = False
    sub.grace_until = sub.payment_failed_at = None
    sub.end_action = None
    sub.notice = None
    sub.pending_change = {"plan_id": plan.id, "term": term, "addons": [a.slug for a in keep]}
    lifecycle.note(service, f"upgrade to {plan.slug} ({term}) started by {actor}: checkout session {session['id']}",
                   actor=actor, kind="billing")
    return session.get("url")


def apply_paid_upgrade(sub: Subscription, service: Service, session: dict) -> str:
    """``checkout.session.completed`` for an upgrade of a running service: it is now paid through
    Stripe on the new plan and term; the backend's ``change_plan`` applies the plan and add-ons
    (no reprovision). Commits; returns the outcome sentence."""
    change = dict(sub.pending_change or {})
    plan = db.session.get(Plan, change.get("plan_id"))
    term = change.get("term")
    sub.pending_change = None
    if sub.status in ("checkout", "incomplete"):
        sub.status = "active"
    if plan is None:
        lifecycle.commit()
        return "upgrade paid, but its plan no longer exists: an operator must check it"
    service.billing_mode = "stripe"
    service.term = term
    sub.term = term
    sub.stripe_price = plan.price_for(term)
    kept = set(change.get("addons") or [])
    for slug in kept:
        if not any(row.addon.slug == slug for row in service.addons):
            addon = Addon.by_slug(slug)
            if addon is not None:
                row = ServiceAddon(addon=addon, state="adding")
                service.addons.append(row)
    _keep_addons(service, kept, term)
    before = service.plan_id
    try:
        lifecycle.request(service, "change_plan", actor="stripe",
                          detail=f"upgrade to {plan.slug} ({term}) paid (checkout session {session.get('id')})",
                          payload={"plan_id": plan.id, "addons": sorted(kept)})
    except lifecycle.LifecycleError as exc:
        lifecycle.note(service, f"upgrade to {plan.slug} paid but not applied: {exc}", actor="stripe", kind="billing")
        return f"upgrade paid but not applied: {exc}"
    return "upgrade paid: plan change requested" if before != plan.id else "now paid through Stripe"


# --------------------------------------------------------------------------- when a subscription ends

def subscription_ended(sub: Subscription, service: Service) -> str | None:
    """What ``customer.subscription.deleted`` does beyond recording it, by ``sub.end_action`` then
    the plan's ``on_cancel``: ``keep`` leaves the service alone, ``terminate`` terminates it now,
    ``downgrade:<slug>`` moves it to that free plan (no suspension, no termination). Returns the
    outcome, or ``None`` for the default (suspend now, terminate after
    ``PANEL_TERMINATE_AFTER_DAYS``). Commits when it acts."""
    action = sub.end_action or service.plan.on_cancel or "suspend"
    if service.status in lifecycle.FINAL or service.status == "terminating":
        return None
    if action == "keep":
        sub.terminate_at = None
        lifecycle.commit()
        return "recorded: the service is paid another way now"
    if action == "terminate":
        sub.terminate_at = None
        sub.terminate_requested_at = utcnow()
        sub.notice = "Your subscription has ended and the service is being removed."
        try:
            lifecycle.request(service, "terminate", actor="stripe", detail="subscription ended: terminate (as set)")
        except lifecycle.LifecycleError as exc:
            return f"subscription ended; not terminated: {exc}"
        return "subscription ended; terminating"
    if action.startswith("downgrade:"):
        return downgrade(sub, service, action.split(":", 1)[1], why="subscription ended")
    return None


def downgrade(sub: Subscription, service: Service, slug: str, *, why: str) -> str:
    """Move a service whose subscription ended or paused to the free plan ``slug`` (seed 003:
    downgrade to the free tier, keeping the data); a non-payment suspension is lifted after.
    Commits; returns the outcome."""
    target = Plan.by_slug(slug)
    if target is None or not target.is_free or target.backend != service.backend:
        lifecycle.note(service, f"{why}: cannot downgrade to {slug} (not a free plan of this backend); suspending",
                       actor="stripe", kind="billing")
        return None
    sub.terminate_at = None
    sub.notice = f"Your subscription has ended: the service continues on {target.name}."
    keep = sorted(row.addon.slug for row in addon_state.wanted(service)
                  if row.addon.is_free and row.addon.slug in (target.addons or []))
    service.billing_mode = "free"
    service.term = None
    _keep_addons(service, set(keep), None)
    outcomes = []
    if service.plan_id != target.id:
        try:
            lifecycle.request(service, "change_plan", actor="stripe", detail=f"{why}: downgrade to {target.slug}",
                              payload={"plan_id": target.id, "addons": keep})
            outcomes.append(f"downgrade to {target.slug} requested")
        except lifecycle.LifecycleError as exc:
            outcomes.append(f"not downgraded: {exc}")
    if lifecycle.projected_status(service) == "suspended" and service.suspension_reason != "operator":
        try:
            lifecycle.request(service, "unsuspend", actor="stripe", detail=f"{why}: running on {target.slug}")
            outcomes.append("unsuspended")
        except lifecycle.LifecycleError:
            pass
    lifecycle.commit()
    return f"{why}; " + "; ".join(outcomes or ["already on the free plan"])


def sync_items(service: Service, subscription: dict, *, only_missing: bool = False) -> None:
    """Record the Stripe subscription item id of each of the service's paid add-ons (matched by
    price) from a subscription object (``only_missing``: only where none is known yet, for an
    event older than the state applied). Does not commit."""
    from panel.billing import stripe_api

    by_price = {stripe_api.item_price(item): item.get("id")
                for item in (subscription.get("items") or {}).get("data") or []}
    for row in service.addons:
        if only_missing and row.stripe_subscription_item_id:
            continue
        if row.price_id and by_price.get(row.price_id) and row.stripe_subscription_item_id != by_price[row.price_id]:
            row.stripe_subscription_item_id = by_price[row.price_id]


# --------------------------------------------------------------------------- complimentary

def comp_service(service: Service, *, actor: str, refund: str = "none", note: str = "") -> str:
    """Make ``service`` complimentary (seed 003's plankowner): its paid plan is given without a
    subscription. A live subscription is cancelled now (``refund`` as the operator chose). The
    customer can still upgrade or start paying later. Commits; returns a sentence."""
    if service.status in lifecycle.FINAL:
        raise ChangeError(f"the service is {service.status}")
    if service.status == "pending_payment":
        raise ChangeError("the order is waiting for payment: cancel it and order for the customer instead")
    if service.plan.is_free:
        raise ChangeError("the service is on a free plan already")
    stop_billing(service, actor=actor, refund=refund, why="made complimentary")
    service.billing_mode = "complimentary"
    _keep_addons(service, {row.addon.slug for row in service.addons if row.addon.is_free}, None)  # paid ones go
    lifecycle.note(service, f"made complimentary by {actor}" + (f": {note}" if note else ""), actor=actor, kind="billing")
    if any(row.state == "removing" for row in service.addons) and service.status == "active":
        apply_to_backend(service, actor=actor, why="complimentary: paid add-ons removed")
    tasks.commit_and_hand_over()
    return f"Service {service.id} is complimentary now."


def set_account_complimentary(user: User, on: bool, *, actor: str, note: str = "", comp_services: bool = False,
                              refund: str = "none") -> str:
    """Mark an account complimentary (its future paid orders need no payment) or not; with
    ``comp_services`` its running paid services are made complimentary too. Commits."""
    row = db.session.get(AccountBilling, user.id)
    if row is None:
        row = AccountBilling(user_id=user.id)
        db.session.add(row)
    row.complimentary = bool(on)
    row.note = note or row.note or ""
    row.updated_by = actor
    lifecycle.commit()
    done = []
    if on and comp_services:
        services = db.session.scalars(db.select(Service).where(Service.user_id == user.id,
                                                               Service.status.in_(("active", "suspended")))).all()
        for service in services:
            if not service.plan.is_free and service.billing_mode != "complimentary":
                comp_service(service, actor=actor, refund=refund, note="the account is complimentary")
                done.append(service.id)
    state = "complimentary" if on else "paying"
    return f"{user.email} is {state} now" + (f"; services {', '.join(map(str, done))} made complimentary" if done else "")

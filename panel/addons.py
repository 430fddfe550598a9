"""Add-ons: merging their options into a plan's, and keeping a service's add-ons and their
append-only event log (seed 002's ``tenant_skill_events``) in step with what the backend applied.

An add-on's ``options`` are merged into the plan's options before the backend sees them:

* a string ``"+N"`` (N a number) adds N to the plan's number option (``{memory: "+2048"}`` on
  ``memory: 4096`` gives 6144); a missing option counts as 0;
* a string ``'+[...]'`` (a JSON list) appends the items that are not there yet to a list option
  (``{packages: '+["searxng"]'}``); a missing option counts as ``[]``;
* any other value replaces the option.

Add-ons are merged in their catalog order, so the result does not depend on the order they
were bought in. The merged options are validated by the backend's ``PlanOptions`` schema before
anything is charged (``panel.orders``, ``panel.billing.changes``).

The event log is written when the backend confirms a change (``confirm``, called by
``panel.lifecycle.succeed`` for ``provision`` and ``change_plan``), never when it is asked for,
so the events match what the backend committed.
"""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Iterable, Mapping

from panel.extensions import db
from panel.models import Addon, AddonEvent, Plan, Service, ServiceAddon
from panel.models.base import utcnow


class AddonOptionError(ValueError):
    """An add-on option that cannot be merged; the message names the option."""


def parse_value(key: str, value: Any) -> tuple[str, Any]:
    """``("add", number)``, ``("append", [items])`` or ``("replace", value)`` for one add-on option.
    Raises ``AddonOptionError`` for a ``"+..."`` string that is neither a number nor a JSON list."""
    if isinstance(value, str) and value.strip().startswith("+"):
        text = value.strip()[1:].strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            raise AddonOptionError(f"{key}: {value!r} must be \"+<number>\" or '+[<JSON list>]'") from None
        if isinstance(parsed, bool) or not isinstance(parsed, (int, float, list)):
            raise AddonOptionError(f"{key}: {value!r} must be \"+<number>\" or '+[<JSON list>]'")
        return ("append", parsed) if isinstance(parsed, list) else ("add", parsed)
    return "replace", value


def _add(key: str, base: Any, amount: int | float) -> int | float:
    if base is None:
        base = 0
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        raise AddonOptionError(f"{key}: cannot add {amount} to {base!r} (not a number)")
    if isinstance(base, int) and isinstance(amount, int):
        return base + amount
    total = Decimal(str(base)) + Decimal(str(amount))  # 0.1 + 0.2 stays 0.3
    return int(total) if total == total.to_integral_value() else float(total)


def merge_options(base: Mapping[str, Any] | None, addon_options: Iterable[Mapping[str, Any] | None]) -> dict:
    """The plan options ``base`` with each add-on's options merged in, in order (see the module
    docstring). Returns a new dict; raises ``AddonOptionError``."""
    merged = json.loads(json.dumps(dict(base or {})))  # a deep copy of JSON values
    for options in addon_options:
        for key, value in (options or {}).items():
            how, operand = parse_value(key, value)
            if how == "add":
                merged[key] = _add(key, merged.get(key), operand)
            elif how == "append":
                current = merged.get(key)
                if current is None:
                    current = []
                if not isinstance(current, list):
                    raise AddonOptionError(f"{key}: cannot append to {current!r} (not a list)")
                merged[key] = current + [item for item in operand if item not in current]
            else:
                merged[key] = value
    return merged


def in_catalog_order(addons: Iterable[Addon]) -> list[Addon]:
    """``addons`` without duplicates, in catalog order (``sort_order``, then id)."""
    unique = {a.id: a for a in addons}
    return sorted(unique.values(), key=lambda a: (a.sort_order or 0, a.id or 0))


def options_for(plan: Plan, addons: Iterable[Addon]) -> dict:
    """What the backend sees for ``plan`` with ``addons``: ``merge_options(plan.options, ...)``."""
    return merge_options(plan.options, [a.options for a in in_catalog_order(addons)])


def applied(service: Service) -> list[ServiceAddon]:
    """The service's add-ons the backend has now (``active`` or ``removing``)."""
    return [row for row in service.addons if row.applied]


def effective_options(service: Service) -> dict:
    """The options the backend has for ``service`` (what ``ServiceSpec.options`` carries): its
    plan's with its applied add-ons merged in; while it is being provisioned, with the add-ons it
    was ordered with (``provision`` applies them)."""
    rows = wanted(service) if service.status in ("pending_payment", "provisioning") else applied(service)
    return options_for(service.plan, [row.addon for row in rows])


def wanted(service: Service) -> list[ServiceAddon]:
    """The add-ons the service should have once what was asked is done (``adding`` or ``active``)."""
    return [row for row in service.addons if row.state in ("adding", "active")]


def target_options(service: Service, plan: Plan | None, payload: Mapping[str, Any] | None) -> dict:
    """The options a ``change_plan`` operation applies: ``plan`` (default: the service's) with the
    add-ons named in ``payload["addons"]`` (default: those the service should have)."""
    plan = plan or service.plan
    slugs = (payload or {}).get("addons")
    if slugs is None:
        addons = [row.addon for row in wanted(service)]
    else:
        addons = db.session.scalars(db.select(Addon).where(Addon.slug.in_(list(slugs)))).all()
    return options_for(plan, addons)


def _event(service: Service, row: ServiceAddon, kind: str, actor: str, op_id: int | None, at) -> AddonEvent:
    ev = AddonEvent(service_id=service.id, addon_id=row.addon_id, addon_slug=row.addon.slug, kind=kind, at=at,
                    price_id=row.price_id, term=row.term, unit_amount=row.unit_amount, currency=row.currency,
                    billing_mode=service.billing_mode, actor=actor, operation_id=op_id)
    db.session.add(ev)
    return ev


def confirm(service: Service, action: str, payload: Mapping[str, Any] | None, *, actor: str = "worker",
            operation_id: int | None = None) -> tuple[list[str], list[str]]:
    """Record what the backend just applied for ``service`` (its ``provision`` or ``change_plan``
    succeeded): add-ons ``adding`` become ``active`` (an ``enabled`` event each), add-ons
    ``removing`` (or, for ``change_plan``, not in ``payload["addons"]``) are dropped (a
    ``disabled`` event each). Returns ``(enabled slugs, disabled slugs)``. Does not commit."""
    at = utcnow()
    target = (payload or {}).get("addons")
    enabled, disabled = [], []
    for row in list(service.addons):
        slug = row.addon.slug
        keep = row.state != "removing" if target is None or action == "provision" else slug in target
        if keep and row.state == "adding":
            row.state = "active"
            _event(service, row, "enabled", actor, operation_id, at)
            enabled.append(slug)
        elif not keep and row.applied:
            _event(service, row, "disabled", actor, operation_id, at)
            disabled.append(slug)
            service.addons.remove(row)
        elif not keep:  # asked for, never applied: nothing to log
            service.addons.remove(row)
    return enabled, disabled


def events_of(service: Service) -> list[AddonEvent]:
    """The service's add-on events, oldest first."""
    return db.session.scalars(db.select(AddonEvent).where(AddonEvent.service_id == service.id)
                              .order_by(AddonEvent.at, AddonEvent.id)).all()

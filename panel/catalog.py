"""The plan catalog file: ``panel plans import FILE.yaml``.

Format (in the style of seed 003's quotas.yaml and seed 001's plans and addons)::

    plans:
      - slug: mc-4gb                  # unique, [a-z0-9-]
        name: Minecraft 4 GB
        description: 4 GB of RAM      # optional
        backend: pterodactyl
        options: {memory: 4096, disk: 20480, cpu: 200}   # validated by the backend's PlanOptions
        prices: {monthly: price_..., quarterly: price_..., yearly: price_...}   # optional
        stripe_price: price_...       # optional shorthand for prices: {monthly: price_...}
        addons: [backups-3, extra-ram-2gb]                # optional, slugs of addons below
        max_per_customer: 1           # optional: live services of this plan per account
        on_cancel: downgrade:mc-free  # optional: suspend (default), terminate, downgrade:<free plan>
        metered:                      # optional: prices per unit of the backend's billable metrics
          posts: {unit_price: "0.01", currency: usd}     # (Backend.billable_metrics; aggregate:
          storage_gib: {unit_price: "0.50", free: 1, currency: usd, aggregate: max}   # its default)
        active: true                  # optional, default true
    addons:
      - slug: extra-ram-2gb
        name: 2 GB more RAM
        description: ...              # optional
        prices: {monthly: price_..., yearly: price_...}   # optional: none means free
        options: {memory: "+2048"}    # "+N" adds, '+[...]' appends to a list, a plain value replaces
        active: true                  # optional

No price at all means a free plan (like seed 003's free tier). Terms are ``monthly``,
``quarterly``, ``semiannual`` and ``yearly``; their amounts, currency and interval come from Stripe
(``panel stripe sync``; ``panel stripe check`` checks each interval matches its term).

Every plan's options are validated with each of its add-ons merged in, and with all of them at
once, so an add-on can never produce options the backend refuses. The import is an
all-or-nothing, idempotent upsert by slug (plans and add-ons).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from panel.addons import AddonOptionError, merge_options, parse_value
from panel.backends import BackendError, ValidationError, validate_model
from panel.extensions import db
from panel.models import Addon, Plan
from panel.models.catalog import TERMS
from panel.plugins import BackendNotConfigured, backend_class, get_backend

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
KNOWN_KEYS = {"slug", "name", "description", "backend", "options", "stripe_price", "prices", "addons",
              "max_per_customer", "on_cancel", "metered", "active"}
METERED_KEYS = {"unit_price", "currency", "free", "aggregate", "meter", "price"}
ADDON_KEYS = {"slug", "name", "description", "prices", "options", "active"}
PRICE_PREFIXES = ("price_", "plan_")


class CatalogError(ValueError):
    """The catalog is invalid. ``errors`` lists "plan <slug>: <field>: <message>" lines."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass
class ImportReport:
    """What an import did: slugs created, updated and unchanged (plans, then add-ons as
    ``addon:<slug>``), and warnings."""
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _validate_options(backend: str, options: dict, warnings: list[str], slug: str) -> dict:
    cls = backend_class(backend)
    try:
        instance = get_backend(backend)
    except BackendNotConfigured:
        warning = f"plan {slug}: {backend} is not configured, so only the option schema was checked"
        if warning not in warnings:
            warnings.append(warning)
        return validate_model(cls.PlanOptions, options)
    try:
        return instance.validate_plan_options(options)
    except BackendError as exc:
        warnings.append(f"plan {slug}: options could not be checked against {backend} ({exc}); schema only")
        return validate_model(cls.PlanOptions, options)


def _prices(label: str, item: dict, errors: list[str]) -> dict[str, str]:
    prices = item.get("prices")
    if prices is None:
        prices = {}
    if not isinstance(prices, dict):
        errors.append(f"{label}: prices: must be a mapping of term to Stripe price id")
        return {}
    out = {}
    for term, price in prices.items():
        if term not in TERMS:
            errors.append(f"{label}: prices.{term}: is not a term (use {', '.join(TERMS)})")
        elif not isinstance(price, str) or not price.startswith(PRICE_PREFIXES):
            errors.append(f"{label}: prices.{term}: must be a Stripe price id (price_...)")
        else:
            out[term] = price
    return out


def _slug_of(kind: str, index: int, item: dict, errors: list[str]) -> tuple[str | None, str]:
    """``(slug, label)`` of a catalog entry; the slug is ``None`` (and an error recorded) when it
    is not a valid slug. ``label`` names the entry in messages ("plan mc-4gb", "addon #2")."""
    slug = str(item.get("slug") or "")
    label = f"{kind} {slug}" if slug else f"{kind} #{index + 1}"
    if not SLUG.fullmatch(slug):
        errors.append(f"{label}: slug: must match [a-z0-9][a-z0-9-]* (at most 63 characters)")
        return None, label
    return slug, label


def _load_addons(items, errors: list[str]) -> dict[str, dict]:
    if items is None:
        return {}
    if not isinstance(items, list):
        errors.append("addons: must be a list")
        return {}
    clean: dict[str, dict] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(f"addon #{index + 1}: must be a mapping")
            continue
        slug, label = _slug_of("addon", index, item, errors)
        if slug is None:
            continue
        if slug in clean:
            errors.append(f"{label}: slug: appears twice")
            continue
        for key in sorted(set(item) - ADDON_KEYS):
            errors.append(f"{label}: {key}: is not a known add-on field")
        if not isinstance(item.get("name"), str) or not item.get("name"):
            errors.append(f"{label}: name: is required")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            errors.append(f"{label}: options: must be a mapping")
            options = {}
        for key, value in options.items():
            try:
                parse_value(key, value)
            except AddonOptionError as exc:
                errors.append(f"{label}: options.{exc}")
        active = item.get("active", True)
        if not isinstance(active, bool):
            errors.append(f"{label}: active: must be true or false")
        clean[slug] = {"slug": slug, "name": item.get("name"), "description": item.get("description") or "",
                       "prices": _prices(label, item, errors), "options": options, "active": active,
                       "sort_order": index}
    return clean


def _known_addon(slug: str, addons: dict[str, dict]) -> dict | None:
    if slug in addons:
        return addons[slug]
    row = Addon.by_slug(slug)
    return None if row is None else {"slug": row.slug, "prices": row.term_prices, "options": row.options,
                                     "active": row.active}


def _check_plan_addons(label: str, plan: dict, slugs: list[str], addons: dict[str, dict], errors: list[str],
                       warnings: list[str]) -> None:
    """Each add-on merged into the plan's options, and all of them at once, must pass the backend."""
    found = []
    for slug in slugs:
        addon = _known_addon(slug, addons)
        if addon is None:
            errors.append(f"{label}: addons: {slug} is not an add-on (add it under addons:)")
            continue
        found.append(addon)
        if plan["prices"] and addon["prices"] and not set(addon["prices"]) & set(plan["prices"]):
            warnings.append(f"{label}: add-on {slug} has no price for any of the plan's terms, so it is never offered")
    combos = [[a] for a in found] + ([found] if len(found) > 1 else [])
    for combo in combos:
        try:
            merged = merge_options(plan["options"], [a["options"] for a in combo])
        except AddonOptionError as exc:
            errors.append(f"{label}: with add-on {'+'.join(a['slug'] for a in combo)}: options.{exc}")
            continue
        try:
            _validate_options(plan["backend"], merged, warnings, plan["slug"])
        except ValidationError as exc:
            errors += [f"{label}: with add-on {'+'.join(a['slug'] for a in combo)}: options.{k}: {v}"
                       for k, v in exc.errors.items()]


def load_catalog(text: str) -> tuple[list[dict], list[str], list[dict] | None]:
    """Parse and validate catalog YAML; returns (clean plan dicts, warnings, clean add-on dicts or
    ``None`` when the file has no ``addons:`` section).

    Raises ``CatalogError`` naming each plan or add-on and field at fault.
    """
    import yaml  # here: the operator's plan page does not load PyYAML until a catalog is uploaded

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError([f"not valid YAML: {exc}"]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("plans"), list):
        raise CatalogError(["the file must have a top-level 'plans:' list"])
    errors: list[str] = []
    warnings: list[str] = []
    for key in sorted(set(doc) - {"plans", "addons"}):
        errors.append(f"{key}: is not a known catalog section (plans, addons)")
    addons = _load_addons(doc.get("addons"), errors)
    clean: list[dict] = []
    seen: set[str] = set()
    pending_addons: list[tuple[str, dict, list[str]]] = []
    for index, item in enumerate(doc["plans"]):
        if not isinstance(item, dict):
            errors.append(f"plan #{index + 1}: must be a mapping")
            continue
        slug, label = _slug_of("plan", index, item, errors)
        if slug is None:
            slug = str(item.get("slug") or "")
        elif slug in seen:
            errors.append(f"{label}: slug: appears twice")
        seen.add(slug)
        for key in sorted(set(item) - KNOWN_KEYS):
            errors.append(f"{label}: {key}: is not a known plan field")
        if not isinstance(item.get("name"), str) or not item.get("name"):
            errors.append(f"{label}: name: is required")
        backend = item.get("backend")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            errors.append(f"{label}: options: must be a mapping")
            options = {}
        prices = _prices(label, item, errors)
        price = item.get("stripe_price")
        if price is not None:
            if not isinstance(price, str) or not price.startswith(PRICE_PREFIXES):
                errors.append(f"{label}: stripe_price: must be a Stripe price id (price_...)")
            elif prices.get("monthly") not in (None, price):
                errors.append(f"{label}: stripe_price: is the monthly price, but prices.monthly says "
                              f"{prices['monthly']}: keep one")
            else:
                prices["monthly"] = price
        slugs = item.get("addons") or []
        if not isinstance(slugs, list) or not all(isinstance(s, str) for s in slugs):
            errors.append(f"{label}: addons: must be a list of add-on slugs")
            slugs = []
        elif len(set(slugs)) != len(slugs):
            errors.append(f"{label}: addons: lists an add-on twice")
        limit = item.get("max_per_customer")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            errors.append(f"{label}: max_per_customer: must be a whole number of at least 1")
        on_cancel = item.get("on_cancel") or "suspend"
        if not isinstance(on_cancel, str) or not (on_cancel in ("suspend", "terminate")
                                                  or on_cancel.startswith("downgrade:")):
            errors.append(f"{label}: on_cancel: must be suspend, terminate or downgrade:<free plan slug>")
        active = item.get("active", True)
        if not isinstance(active, bool):
            errors.append(f"{label}: active: must be true or false")
        try:
            cls = backend_class(str(backend or ""))
        except BackendNotConfigured as exc:
            errors.append(f"{label}: backend: {exc}")
            continue
        metered = _metered(label, item.get("metered"), errors, cls)
        try:
            options = _validate_options(backend, options, warnings, slug)
        except ValidationError as exc:
            errors += [f"{label}: options.{k}: {v}" for k, v in exc.errors.items()]
            continue
        ordered = {t: prices[t] for t in TERMS if t in prices}
        plan = {"slug": slug, "name": item.get("name"), "description": item.get("description") or "",
                "backend": backend, "options": options, "prices": ordered,
                "stripe_price": next(iter(ordered.values()), None), "addons": list(slugs),
                "max_per_customer": limit, "on_cancel": on_cancel, "metered": metered, "active": active,
                "sort_order": index}
        clean.append(plan)
        pending_addons.append((label, plan, list(slugs)))
    by_slug = {p["slug"]: p for p in clean}
    for label, plan, slugs in pending_addons:
        _check_plan_addons(label, plan, slugs, addons, errors, warnings)
        target = plan["on_cancel"][len("downgrade:"):] if plan["on_cancel"].startswith("downgrade:") else None
        if target is not None:
            other = by_slug.get(target)
            if other is None and (row := Plan.by_slug(target)) is not None:
                other = {"backend": row.backend, "prices": row.term_prices}
            if other is None:
                errors.append(f"{label}: on_cancel: downgrade target {target} is not a plan")
            elif other["backend"] != plan["backend"] or other["prices"]:
                errors.append(f"{label}: on_cancel: downgrade target {target} must be a free plan of "
                              f"the {plan['backend']} backend")
    if errors:
        raise CatalogError(errors)
    return clean, warnings, (list(addons.values()) if "addons" in doc else None)


def metered_problems(backend: type, metered: dict) -> list[str]:
    """What is wrong with a plan's (parsed) ``metered`` block for ``backend`` (a ``Backend``
    subclass): ``["metered.<metric>: <message>"]`` for a metric the backend does not declare in
    ``billable_metrics``, or an ``aggregate`` that does not fit its declaration (package-days,
    ``days``, cannot be summed from samples, nor a sampled metric counted in days). Used by the
    import and by ``panel doctor``."""
    declared = getattr(backend, "billable_metrics", {}) or {}
    known = ", ".join(sorted(declared)) or "none"
    out = []
    for metric, spec in (metered or {}).items():
        found = declared.get(metric)
        if found is None:
            out.append(f"metered.{metric}: the {backend.name} backend does not report {metric} as a billable "
                       f"metric (it declares: {known})")
            continue
        aggregate = (spec or {}).get("aggregate") or found.aggregate
        if found.aggregate == "days" and (spec or {}).get("meter"):
            out.append(f"metered.{metric}.meter: {metric} is counted from the add-on log on our invoices and "
                       "is never sampled, so it cannot be reported to a Stripe meter")
        if (aggregate == "days") != (found.aggregate == "days"):
            allowed = "days" if found.aggregate == "days" else "sum or max"
            out.append(f"metered.{metric}.aggregate: must be {allowed} for {metric} ({found.unit}, "
                       f"declared {found.aggregate} by {backend.name})")
    return out


def _metered(label: str, block, errors: list[str], backend: type | None = None) -> dict:
    """A plan's ``metered:`` block checked: ``{metric: {unit_price (a decimal string), currency (ISO
    4217), free (number, default 0), aggregate (sum|max|days; default: what the backend declares
    in ``billable_metrics``), meter, price}}``; unit prices are kept as strings so no float ever
    touches them. With ``backend`` (a ``Backend`` subclass) a metric it does not declare is an
    error (``metered_problems``)."""
    from decimal import Decimal, InvalidOperation

    from panel.backends import AGGREGATES

    if block is None:
        return {}
    if not isinstance(block, dict):
        errors.append(f"{label}: metered: must be a mapping of metric names")
        return {}
    declared = getattr(backend, "billable_metrics", {}) or {}
    clean = {}
    for metric, spec in block.items():
        where = f"{label}: metered.{metric}"
        if not isinstance(spec, dict):
            errors.append(f"{where}: must be a mapping with unit_price and currency")
            continue
        for key in sorted(set(spec) - METERED_KEYS):
            errors.append(f"{where}.{key}: is not a known field ({', '.join(sorted(METERED_KEYS))})")
        out = {}
        for key in ("unit_price", "free"):
            if key not in spec:
                continue
            value = spec[key]
            if isinstance(value, float):
                errors.append(f"{where}.{key}: write it as a quoted decimal (\"0.50\"), not a float")
                continue
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                number = Decimal(-1)
            if isinstance(value, bool) or not number.is_finite() or number < 0:
                errors.append(f"{where}.{key}: must be a non-negative decimal")
                continue
            out[key] = str(number)
        if "unit_price" not in spec:
            errors.append(f"{where}.unit_price: is required")
        currency = spec.get("currency")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
            errors.append(f"{where}.currency: must be an ISO 4217 code such as usd or chf")
        else:
            out["currency"] = currency.lower()
        default = declared[metric].aggregate if metric in declared else "sum"
        aggregate = spec.get("aggregate", default)
        allowed = (("days",) if default == "days" else ("sum", "max")) if metric in declared else AGGREGATES
        if aggregate not in allowed:
            errors.append(f"{where}.aggregate: must be {' or '.join(allowed) if len(allowed) < 3 else 'sum, max or days'}")
        out["aggregate"] = aggregate
        for key in ("meter", "price"):
            if spec.get(key) is not None:
                out[key] = str(spec[key])
        clean[str(metric)] = out
    if backend is not None:
        errors += [f"{label}: {problem}" for problem in metered_problems(backend, clean)
                   if ".aggregate:" not in problem]  # a wrong aggregate was named above
    return clean


def _upsert(model, data: dict, report: ImportReport, label: str) -> None:
    row = model.by_slug(data["slug"])
    if row is None:
        db.session.add(model(**data))
        report.created.append(label)
        return
    changed = any(getattr(row, k) != v for k, v in data.items())
    for key, value in data.items():
        setattr(row, key, value)
    (report.updated if changed else report.unchanged).append(label)


def import_catalog(text: str) -> ImportReport:
    """Validate then upsert every add-on and plan of the catalog by slug, in one transaction."""
    plans, warnings, addons = load_catalog(text)
    report = ImportReport(warnings=warnings)
    for data in addons or []:
        _upsert(Addon, data, report, f"addon:{data['slug']}")
    db.session.flush()
    for data in plans:
        _upsert(Plan, data, report, data["slug"])
    db.session.commit()
    return report

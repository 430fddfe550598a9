"""The plan catalog file: ``panel plans import FILE.yaml``.

Format (in the style of seed 003's quotas.yaml)::

    plans:
      - slug: pds-free            # unique, [a-z0-9-]
        name: Free PDS
        description: 5 GiB personal data server   # optional
        backend: pds
        options: {disksize_gb: 5} # validated by the backend's PlanOptions schema
        stripe_price: price_123   # optional: none means free
        active: true              # optional, default true

The import is an all-or-nothing, idempotent upsert by slug.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from panel.backends import BackendError, ValidationError, validate_model
from panel.extensions import db
from panel.models import Plan
from panel.plugins import BackendNotConfigured, backend_class, get_backend

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
KNOWN_KEYS = {"slug", "name", "description", "backend", "options", "stripe_price", "active"}


class CatalogError(ValueError):
    """The catalog is invalid. ``errors`` lists "plan <slug>: <field>: <message>" lines."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass
class ImportReport:
    """What an import did: slugs created, updated and unchanged, and warnings."""
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _validate_options(backend: str, options: dict, warnings: list[str], slug: str) -> dict:
    cls = backend_class(backend)
    try:
        instance = get_backend(backend)
    except BackendNotConfigured:
        warnings.append(f"plan {slug}: {backend} is not configured, so only the option schema was checked")
        return validate_model(cls.PlanOptions, options)
    try:
        return instance.validate_plan_options(options)
    except BackendError as exc:
        warnings.append(f"plan {slug}: options could not be checked against {backend} ({exc}); schema only")
        return validate_model(cls.PlanOptions, options)


def load_catalog(text: str) -> tuple[list[dict], list[str]]:
    """Parse and validate catalog YAML; returns (clean plan dicts, warnings).

    Raises ``CatalogError`` naming each plan and field at fault.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError([f"not valid YAML: {exc}"]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("plans"), list):
        raise CatalogError(["the file must have a top-level 'plans:' list"])
    errors: list[str] = []
    warnings: list[str] = []
    clean: list[dict] = []
    seen: set[str] = set()
    for index, item in enumerate(doc["plans"]):
        if not isinstance(item, dict):
            errors.append(f"plan #{index + 1}: must be a mapping")
            continue
        slug = str(item.get("slug") or "")
        label = f"plan {slug}" if slug else f"plan #{index + 1}"
        if not SLUG.fullmatch(slug):
            errors.append(f"{label}: slug: must match [a-z0-9][a-z0-9-]* (at most 63 characters)")
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
        price = item.get("stripe_price")
        if price is not None and (not isinstance(price, str) or not price.startswith(("price_", "plan_"))):
            errors.append(f"{label}: stripe_price: must be a Stripe price id (price_...)")
        active = item.get("active", True)
        if not isinstance(active, bool):
            errors.append(f"{label}: active: must be true or false")
        try:
            backend_class(str(backend or ""))
        except BackendNotConfigured as exc:
            errors.append(f"{label}: backend: {exc}")
            continue
        try:
            options = _validate_options(backend, options, warnings, slug)
        except ValidationError as exc:
            errors += [f"{label}: options.{k}: {v}" for k, v in exc.errors.items()]
            continue
        clean.append({"slug": slug, "name": item.get("name"), "description": item.get("description") or "",
                      "backend": backend, "options": options, "stripe_price": price or None,
                      "active": active, "sort_order": index})
    if errors:
        raise CatalogError(errors)
    return clean, warnings


def import_catalog(text: str) -> ImportReport:
    """Validate then upsert every plan of the catalog by slug, in one transaction."""
    plans, warnings = load_catalog(text)
    report = ImportReport(warnings=warnings)
    for data in plans:
        plan = Plan.by_slug(data["slug"])
        if plan is None:
            db.session.add(Plan(**data))
            report.created.append(data["slug"])
            continue
        changed = any(getattr(plan, k) != v for k, v in data.items())
        for key, value in data.items():
            setattr(plan, key, value)
        (report.updated if changed else report.unchanged).append(data["slug"])
    db.session.commit()
    return report

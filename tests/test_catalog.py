"""``panel plans import``: idempotent upsert by slug, errors naming the plan and field."""
import pytest

from panel.catalog import CatalogError, import_catalog
from panel.extensions import db
from panel.models import Plan

GOOD = """
plans:
  - slug: mem-small
    name: Small
    description: tiny
    backend: memory
    options: {size_mib: 64}
  - slug: mem-pro
    name: Pro
    backend: memory
    options: {size_mib: 1024}
    stripe_price: price_1Pro
    active: false
"""


def test_import_is_an_idempotent_upsert_by_slug(app):
    report = import_catalog(GOOD)
    assert report.created == ["mem-small", "mem-pro"]
    again = import_catalog(GOOD)
    assert again.created == [] and again.updated == [] and again.unchanged == ["mem-small", "mem-pro"]
    changed = import_catalog(GOOD.replace("size_mib: 64", "size_mib: 96"))
    assert changed.updated == ["mem-small"]
    plans = {p.slug: p for p in db.session.scalars(db.select(Plan))}
    assert len(plans) == 2
    assert plans["mem-small"].options == {"size_mib": 96} and plans["mem-small"].is_free
    assert plans["mem-pro"].stripe_price == "price_1Pro" and plans["mem-pro"].active is False


def test_bad_options_name_the_plan_and_field_and_import_nothing(app):
    bad = GOOD.replace("size_mib: 1024", "size_mib: 0").replace("size_mib: 64", "size_mib: 64, colour: red")
    with pytest.raises(CatalogError) as info:
        import_catalog(bad)
    assert "plan mem-small: options.colour: is not a known field" in info.value.errors
    assert "plan mem-pro: options.size_mib: must be at least 1 MiB" in info.value.errors
    assert db.session.scalar(db.select(db.func.count()).select_from(Plan)) == 0


@pytest.mark.parametrize("text, message", [
    ("plans: [{slug: x, name: X, backend: nope}]", "plan x: backend: no backend named 'nope' is installed"),
    ("plans: [{slug: 'Bad Slug', name: X, backend: memory}]", "slug: must match"),
    ("plans: [{slug: a, name: A, backend: memory}, {slug: a, name: B, backend: memory}]", "plan a: slug: appears twice"),
    ("plans: [{slug: a, name: A, backend: memory, stripe_price: prod_123}]", "stripe_price: must be a Stripe price id"),
    ("plans: [{slug: a, backend: memory}]", "plan a: name: is required"),
    ("plans: [{slug: a, name: A, backend: memory, extra: 1}]", "plan a: extra: is not a known plan field"),
    ("nothing: here", "top-level 'plans:' list"),
    ("plans: [", "not valid YAML"),
])
def test_catalog_errors(app, text, message):
    with pytest.raises(CatalogError) as info:
        import_catalog(text)
    assert any(message in line for line in info.value.errors), info.value.errors


def test_the_shipped_example_catalog_is_valid(make_app):
    """The example catalog validates against the installed PDS plugin's schema."""
    import os

    app = make_app(plugins=["pds"])
    path = os.path.join(os.path.dirname(__file__), "..", "panel", "examples", "catalog.yaml")
    with app.app_context():
        report = import_catalog(open(path).read())
        assert "pds-free" in report.created
        assert Plan.by_slug("pds-free").is_free

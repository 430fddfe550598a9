"""The catalog's billing II format: prices per term, add-ons with merged options, limits and
on_cancel; backwards compatible with ``stripe_price``."""
import pytest

from panel.addons import AddonOptionError, merge_options
from panel.catalog import CatalogError, import_catalog
from panel.extensions import db
from panel.models import Addon, Plan

CATALOG = """
plans:
  - slug: mem-free
    name: Free
    backend: memory
    options: {size_mib: 128}
    max_per_customer: 1
  - slug: mem-4g
    name: Four
    backend: memory
    options: {size_mib: 4096}
    prices: {monthly: price_m, quarterly: price_q, yearly: price_y}
    addons: [extra-ram, backups]
    on_cancel: downgrade:mem-free
  - slug: mem-old
    name: Old style
    backend: memory
    options: {size_mib: 256}
    stripe_price: price_old
addons:
  - slug: extra-ram
    name: 2 GB more RAM
    prices: {monthly: price_ram_m, yearly: price_ram_y}
    options: {size_mib: "+2048"}
  - slug: backups
    name: Backups
    options: {}
"""


def test_terms_addons_and_the_stripe_price_shorthand(app):
    report = import_catalog(CATALOG)
    assert report.created == ["addon:extra-ram", "addon:backups", "mem-free", "mem-4g", "mem-old"]
    four, old, free = Plan.by_slug("mem-4g"), Plan.by_slug("mem-old"), Plan.by_slug("mem-free")
    assert four.term_prices == {"monthly": "price_m", "quarterly": "price_q", "yearly": "price_y"}
    assert four.stripe_price == "price_m" and four.addons == ["extra-ram", "backups"]
    assert four.downgrade_slug == "mem-free" and four.default_term == "monthly"
    assert old.term_prices == {"monthly": "price_old"} and not old.is_free and old.on_cancel == "suspend"
    assert free.is_free and free.max_per_customer == 1 and free.terms == []
    ram = Addon.by_slug("extra-ram")
    assert ram.offered_on("yearly") and ram.offered_on("monthly") and not ram.offered_on("quarterly")
    assert Addon.by_slug("backups").is_free and Addon.by_slug("backups").offered_on(None)
    again = import_catalog(CATALOG)
    assert again.created == [] and again.updated == []
    # a file without an addons: section leaves the add-ons alone
    plans_only = CATALOG.split("addons:\n  - slug: extra-ram")[0]
    assert "addon:extra-ram" not in import_catalog(plans_only).updated
    assert Addon.by_slug("extra-ram") is not None


@pytest.mark.parametrize("change, message", [
    (("yearly: price_y", "weekly: price_y"), "plan mem-4g: prices.weekly: is not a term"),
    (("quarterly: price_q", "quarterly: prod_q"), "plan mem-4g: prices.quarterly: must be a Stripe price id"),
    (("addons: [extra-ram, backups]", "addons: [extra-ram, nope]"), "plan mem-4g: addons: nope is not an add-on"),
    (("on_cancel: downgrade:mem-free", "on_cancel: downgrade:mem-old"),
     "plan mem-4g: on_cancel: downgrade target mem-old must be a free plan of the memory backend"),
    (("on_cancel: downgrade:mem-free", "on_cancel: delete"), "plan mem-4g: on_cancel: must be suspend, terminate"),
    (("max_per_customer: 1", "max_per_customer: 0"), "plan mem-free: max_per_customer: must be a whole number"),
    (('options: {size_mib: "+2048"}', 'options: {size_mib: "+lots"}'), "addon extra-ram: options.size_mib"),
    # merged with the add-on the plan's options would break the backend's schema
    (('options: {size_mib: "+2048"}', 'options: {size_mib: "-5000"}'),
     "plan mem-4g: with add-on extra-ram: options.size_mib"),
    (("stripe_price: price_old", "stripe_price: price_old\n    prices: {monthly: price_other}"),
     "plan mem-old: stripe_price: is the monthly price"),
])
def test_catalog_errors_name_the_plan_or_addon_and_import_nothing(app, change, message):
    with pytest.raises(CatalogError) as info:
        import_catalog(CATALOG.replace(*change))
    assert any(message in line for line in info.value.errors), info.value.errors
    assert db.session.scalar(db.select(db.func.count()).select_from(Plan)) == 0
    assert db.session.scalar(db.select(db.func.count()).select_from(Addon)) == 0


def test_merge_adds_appends_and_replaces():
    base = {"memory": 4096, "packages": ["a"], "cpu": 0.1, "game": "minecraft"}
    merged = merge_options(base, [{"memory": "+2048", "packages": '+["b", "a"]', "cpu": "+0.2"},
                                  {"game": "rust", "databases": "+2"}])
    assert merged == {"memory": 6144, "packages": ["a", "b"], "cpu": 0.3, "game": "rust", "databases": 2}
    assert base["packages"] == ["a"]  # the plan's options are not changed
    with pytest.raises(AddonOptionError, match="game: cannot add"):
        merge_options(base, [{"game": "+1"}])
    with pytest.raises(AddonOptionError, match="memory: cannot append"):
        merge_options(base, [{"memory": '+["x"]'}])

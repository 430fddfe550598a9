"""Backends declare their billable metrics (``Backend.billable_metrics``): the catalog prices only
those (a clear error at import and in ``panel doctor`` otherwise) and takes the declared aggregate as
the default; package-days (aggregate ``days``) are counted from the add-on event log; the contract
suite checks each declared metric is reported by ``usage()`` with its unit."""
from __future__ import annotations

from decimal import Decimal

import pytest
from corelib import add_user
from invoicelib import addon_event, pg_app, pg_url, plan, profile, service  # noqa: F401 (fixtures)
from memory_backend import REMOTE, MemoryBackend

from panel.backends import BillableMetric, Metric, Usage, billable
from panel.billing.invoicing import compute_month
from panel.catalog import CatalogError, import_catalog, metered_problems
from panel.extensions import db
from panel.models import Plan
from panel.testing import BackendContract

CATALOG = """
plans:
  - slug: postiz
    name: Postiz
    backend: memory
    options: {{size_mib: 64}}
    metered:
{metered}
"""


def catalog(*lines: str) -> str:
    return CATALOG.format(metered="\n".join(f"      {line}" for line in lines))


def test_billable_metric_values():
    metric = BillableMetric("storage_gib", "GiB", "max")
    assert metric.title == "Storage gib" and BillableMetric("posts", "count", label="Posts").title == "Posts"
    with pytest.raises(ValueError, match="aggregate must be one of sum, max, days"):
        BillableMetric("posts", "count", "avg")
    with pytest.raises(ValueError, match="needs a name and a unit"):
        BillableMetric("posts", "")
    with pytest.raises(ValueError, match="declared twice"):
        billable(BillableMetric("posts", "count"), BillableMetric("posts", "count"))
    declared = billable(BillableMetric("posts", "count"))
    assert list(declared) == ["posts"]
    with pytest.raises(TypeError):
        declared["other"] = metric  # read-only


def test_the_shipped_backends_declare_seed_002_and_004_metrics():
    from panel_docker.backend import DockerBackend
    from panel_kubernetes.backend import KubernetesBackend

    docker = DockerBackend.billable_metrics
    assert {(m.name, m.unit, m.aggregate) for m in docker.values()} == {("posts", "count", "sum"),
                                                                         ("storage_gib", "GiB", "max")}
    [days] = KubernetesBackend.billable_metrics.values()
    assert (days.name, days.unit, days.aggregate) == ("package_days", "day", "days")


def test_the_catalog_takes_the_declared_aggregate_and_refuses_undeclared_metrics(app):
    import_catalog(catalog('posts: {unit_price: "0.01", currency: usd}',
                           'storage_gib: {unit_price: "0.50", free: 1, currency: usd}'))
    metered = Plan.by_slug("postiz").metered
    assert metered["storage_gib"]["aggregate"] == "max"      # MemoryBackend declares storage_gib a level
    assert metered["posts"]["aggregate"] == "sum"
    with pytest.raises(CatalogError) as err:
        import_catalog(catalog('posts: {unit_price: "0.01", currency: usd}',
                               'cpu: {unit_price: "0.02", currency: usd}',
                               'storage_gib: {unit_price: "0.50", currency: usd, aggregate: days}'))
    assert err.value.errors == [
        "plan postiz: metered.storage_gib.aggregate: must be sum or max",
        "plan postiz: metered.cpu: the memory backend does not report cpu as a billable metric "
        "(it declares: posts, storage_gib)"]
    assert Plan.by_slug("postiz").metered == metered         # all or nothing: the good plan is kept


def test_package_days_must_be_counted_in_days():
    from panel_kubernetes.backend import KubernetesBackend

    assert metered_problems(KubernetesBackend, {"package_days": {"aggregate": "days"}}) == []
    assert metered_problems(KubernetesBackend, {"package_days": {"aggregate": "sum"}}) == [
        "metered.package_days.aggregate: must be days for package_days (day, declared days by kubernetes)"]
    [problem] = metered_problems(KubernetesBackend, {"package_days": {"aggregate": "days", "meter": "pkg"}})
    assert problem.startswith("metered.package_days.meter: package_days is counted from the add-on log")


def test_doctor_names_a_stored_plan_pricing_an_undeclared_metric(app):
    from flask_migrate import stamp

    from panel import doctor

    stamp()  # the test database's tables come from create_all: record the newest migration
    db.session.add(Plan(slug="odd", name="Odd", backend="memory", options={"size_mib": 64},
                        metered={"bandwidth": {"unit_price": "0.1", "currency": "usd", "aggregate": "sum"}}))
    db.session.commit()
    [problem] = [p for name, p in doctor.run().problems if name == "plans"]
    assert problem.message == ("plan odd: metered.bandwidth: the memory backend does not report bandwidth as a "
                               "billable metric (it declares: posts, storage_gib)")
    assert "metered: block" in problem.fix
    from panel.cli import cli

    result = app.test_cli_runner().invoke(cli, ["doctor"])
    assert result.exit_code == 1 and "plan odd: metered.bandwidth" in result.output
    listed = app.test_cli_runner().invoke(cli, ["plugins", "list"])
    assert "  billable metrics: posts (count, sum), storage_gib (GiB, max)" in listed.output


def test_seed_002_package_days_priced_per_day_from_the_add_on_log(pg_app):
    # seed 002's per-package daily price: packages without a price of their own, CHF 0.10 a package-day
    tenant = plan("tenant", 4900, "chf", {"package_days": {"unit_price": "0.10", "currency": "chf",
                                                           "free": "5", "aggregate": "days"}})
    org = add_user("days@example.com")
    profile(org, company="Days AG", country="CH")
    svc = service(org, tenant, [("2026-10-20 08:00", "active"), ("2026-11-10 12:00", "suspended"),
                                ("2026-11-15 08:00", "active")], "days-tenant")
    # searxng (no price): 5th 18:00 to 20th 09:00 = 16 days touched, 4 of them suspended all day: 12
    addon_event(svc, "searxng", "enabled", "2026-11-05 18:00", None, "chf")
    addon_event(svc, "searxng", "disabled", "2026-11-20 09:00", None, "chf")
    # threema (no price): from 23:30 on the 28th: 3 days
    addon_event(svc, "threema", "enabled", "2026-11-28 23:30", None, "chf")
    # a priced add-on keeps its own prorated line and is not counted again as package-days
    addon_event(svc, "backup", "enabled", "2026-11-29 10:00", 300, "chf")
    db.session.commit()
    [draft] = compute_month(org, "2026-11")
    got = [(line.kind, line.unit, line.quantity, line.amount) for line in draft.lines]
    assert got == [("base", "day", Decimal(26), 4247),
                   ("addon", "day", Decimal(2), 20),                       # 3.00 * 2/30
                   ("metered", "package_days", Decimal(10), 100)]          # 12 + 3 = 15, 5 free: 10 x 0.10
    assert "15 used, 5 free" in draft.lines[-1].description


class _Counting(MemoryBackend):
    """The memory backend with a remote that counts posts and storage for every service."""

    def usage(self, spec):
        REMOTE.objects.setdefault(spec.external_id, {}).update(posts=3, storage_gib=0.5)
        return super().usage(spec)


class _WrongUnit(MemoryBackend):
    """The memory backend reporting storage in MiB although it declares GiB (a broken plugin)."""

    def usage(self, spec):
        return Usage((Metric("posts", 1, "count"), Metric("storage_gib", 1024, "MiB")))


class _Contract(BackendContract):
    spec_options = {"size_mib": 64}
    spec_params = {"name": "contract"}


def test_the_contract_suite_checks_declared_metrics_and_units(app):
    REMOTE.__init__()
    _Contract().test_billable_metrics_are_reported_with_their_units(_Counting({}))
    with pytest.raises(AssertionError, match="billable metric 'posts' is missing from usage"):
        _Contract().test_billable_metrics_are_reported_with_their_units(MemoryBackend({}))
    with pytest.raises(AssertionError, match="declared in 'GiB' but usage\\(\\) reports 'MiB'"):
        _Contract().test_billable_metrics_are_reported_with_their_units(_WrongUnit({}))

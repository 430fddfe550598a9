"""``panel reconcile kubernetes --adopt`` against the loopback API server (issue 12 section 2): seed
002's backfill. Tenants the portal made before the panel (no ``hostpanel.dev/service`` label) and
one of ours whose record was lost become services: the customer from a mapping file or the
annotation, the plan from ``spec.packages``/``spec.resources`` or given, the event log backfilled
from ``creationTimestamp``, ``spec.packages`` and ``status.suspendedAt``. A second run adopts 0 and
inserts 0 events. Nothing is created or deleted in the cluster; unlabelled tenants get our label
and annotations only (a metadata merge patch), so later calls find them.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from k8s_testlib import NAMESPACE, TOKEN, make_backend, requests_of, spec_for
from panel.testing import after_provision, plugin_app
from panel_kubernetes.backend import EXTERNAL_ID_ANNOTATION, SERVICE_LABEL


@pytest.fixture
def panel_app(tmp_path, monkeypatch, standin):
    from panel.extensions import db

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    app = plugin_app(tmp_path / "panel.db", "kubernetes",
                     {"api_url": standin.url, "token": TOKEN, "namespace": NAMESPACE, "timeout_seconds": 3,
                      "ready_timeout_seconds": 3},
                     users=[("anna@pieced.example", "customer"), ("ben@pieced.example", "customer")],
                     plans=[{"slug": "tenant-basic", "name": "Tenant basic", "backend": "kubernetes",
                             "options": {"packages": ["searxng-local-search"], "memory_mib": 4096}},
                            {"slug": "tenant-plus", "name": "Tenant plus", "backend": "kubernetes",
                             "options": {"packages": ["searxng-local-search", "threema"], "memory_mib": 8192}}])
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def _portal_tenant(standin, name, *, packages, memory="4096Mi", suspended_at=None, created="2024-03-01T09:00:00Z"):
    """A PiecedTenant the seed's portal made: its own labels, no hostpanel marks."""
    obj = {"metadata": {"name": name, "namespace": NAMESPACE, "creationTimestamp": created,
                        "labels": {"pieced.ch/org": "org-" + name}},
           "spec": {"packages": list(packages), "suspend": suspended_at is not None,
                    "resources": {"memory": memory}}}
    if suspended_at:
        obj["status"] = {"suspendedAt": suspended_at}
    return standin.put(obj)


def test_adopt_backfills_seed_002_tenants_and_a_second_run_inserts_nothing(panel_app, standin, kube, tmp_path):
    from panel import lifecycle
    from panel.cli import cli
    from panel.extensions import db
    from panel.models import Service

    _portal_tenant(standin, "acme", packages=["searxng-local-search"])
    _portal_tenant(standin, "globex", packages=["threema", "searxng-local-search"], memory="8Gi",
                   suspended_at="2024-06-02T10:30:00Z")
    _portal_tenant(standin, "initech", packages=["unknown-skill"])  # matches no plan: skipped
    ours = spec_for(kube, params={"tenant_name": "lost"}, options={"packages": ["searxng-local-search"],
                                                                  "memory_mib": 4096},
                    email="ben@pieced.example")
    ours = after_provision(ours, kube.provision(ours))  # made by the panel, its record lost
    mapping = tmp_path / "tenants.csv"
    mapping.write_text("remote,email,plan\nacme,anna@pieced.example,\nglobex,Anna@Pieced.example,\n"
                       "initech,anna@pieced.example,\n")
    runner = panel_app.test_cli_runner()
    patches_before = len(requests_of(standin, "patch"))

    first = runner.invoke(cli, ["reconcile", "kubernetes", "--adopt", "--mapping", str(mapping)])
    assert first.exit_code == 1, first.output
    # acme: created + 1 package + adopted; globex: created + 2 packages + suspended + adopted;
    # ours: created + 1 package + adopted
    assert "kubernetes: examined 4 / adopted 3 / events inserted 11 / skipped 1" in first.output, first.output
    assert "initech" in first.output and "packages=['unknown-skill']" in first.output

    acme = db.session.scalar(db.select(Service).where(Service.resource_id == "acme"))
    assert acme.status == "active" and acme.user.email == "anna@pieced.example" and acme.plan.slug == "tenant-basic"
    assert [e.kind for e in acme.events] == ["created", "package", "adopted"]
    assert acme.events[0].at.replace(tzinfo=timezone.utc) == datetime(2024, 3, 1, 9, tzinfo=timezone.utc)
    assert acme.created_at.replace(tzinfo=timezone.utc) == datetime(2024, 3, 1, 9, tzinfo=timezone.utc)
    assert "package searxng-local-search enabled" in acme.events[1].detail
    obj = standin.get(NAMESPACE, "acme")
    assert obj["metadata"]["labels"][SERVICE_LABEL] == acme.external_id
    assert obj["metadata"]["annotations"][EXTERNAL_ID_ANNOTATION] == acme.external_id
    assert obj["metadata"]["labels"]["pieced.ch/org"] == "org-acme", "the portal's own labels stay"
    assert obj["spec"]["packages"] == ["searxng-local-search"], "the spec is not touched"

    globex = db.session.scalar(db.select(Service).where(Service.resource_id == "globex"))
    assert globex.status == "suspended" and globex.plan.slug == "tenant-plus"
    kinds = [e.kind for e in globex.events]
    assert kinds == ["created", "package", "package", "suspended", "adopted"]
    assert globex.events[3].at.replace(tzinfo=timezone.utc) == datetime(2024, 6, 2, 10, 30, tzinfo=timezone.utc)

    lost = db.session.scalar(db.select(Service).where(Service.external_id == ours.external_id))
    assert lost.user.email == "ben@pieced.example" and lost.plan.slug == "tenant-basic"
    assert lost.claim_key == "lost" and lost.resource_id == ours.resource_id

    # later calls find the adopted tenants: unsuspend globex for real
    lifecycle.request(globex, "unsuspend", actor="operator:ops@example.com")
    from panel import dispatch

    assert dispatch.inprocess_runner().wait_idle(60)
    db.session.expire_all()
    assert globex.status == "active" and standin.get(NAMESPACE, "globex")["spec"]["suspend"] is False

    patches_after = len(requests_of(standin, "patch"))
    second = runner.invoke(cli, ["reconcile", "kubernetes", "--adopt", "--mapping", str(mapping)])
    assert "examined 1 / adopted 0 / events inserted 0 / skipped 1" in second.output, second.output
    assert len(requests_of(standin, "patch")) == patches_after, "a second run writes nothing"
    assert patches_after - patches_before == 3, "two metadata patches to adopt, one to unsuspend"
    assert not requests_of(standin, "create")[1:], "adopting never creates anything"
    assert not requests_of(standin, "delete")
    given = runner.invoke(cli, ["reconcile", "kubernetes", "--adopt", "--mapping", str(mapping),
                                "--plan", "tenant-basic"])
    assert "examined 1 / adopted 1 / events inserted 3 / skipped 0" in given.output, given.output
    again = runner.invoke(cli, ["reconcile", "kubernetes", "--adopt", "--mapping", str(mapping)])
    assert again.exit_code == 0 and "examined 0 / adopted 0 / events inserted 0 / skipped 0" in again.output


def test_an_unmapped_portal_tenant_without_an_email_is_skipped_with_the_reason(panel_app, standin):
    from panel.cli import cli

    _portal_tenant(standin, "hooli", packages=["searxng-local-search"])
    result = panel_app.test_cli_runner().invoke(cli, ["reconcile", "kubernetes", "--adopt"])
    assert result.exit_code == 1
    assert "hooli" in result.output and "no customer: the object names none" in result.output
    assert SERVICE_LABEL not in (standin.get(NAMESPACE, "hooli")["metadata"].get("labels") or {})
    assert make_backend(standin.url).list_unmanaged()[0].resource_id == "hooli"

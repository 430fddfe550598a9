"""The operator's lists at any size: name, hostname, customer and created columns, search, keyset
paging, counts kept in ``service_counts``, and SQL statement counts that do not grow with the
number of services (checked on PostgreSQL, not timed)."""
from __future__ import annotations

import re

import pytest
from corelib import add_user, login
from querycount import recording

from panel import counts, jobs, lifecycle
from panel.extensions import db
from panel.models import Operation, Plan, Service, ServiceCount, User
from panel.models.base import utcnow


def _grouped() -> dict:
    rows = db.session.execute(db.select(Service.plan_id, Service.status, db.func.count())
                              .group_by(Service.plan_id, Service.status)).all()
    return {(p, s): n for p, s, n in rows}


def _kept() -> dict:
    return {(r.plan_id, r.status): r.n for r in db.session.scalars(db.select(ServiceCount)) if r.n}


def test_counts_follow_every_change_and_roll_back_with_it(app, customer, plans):
    from corelib import wait_jobs

    free = lifecycle.create_service(customer, plans["free"], {"name": "web1"}, actor="test")
    paid = lifecycle.create_service(customer, plans["paid"], {"name": "web2"}, actor="test")
    wait_jobs(app)
    assert _kept() == _grouped() == {(plans["free"].id, "active"): 1, (plans["paid"].id, "pending_payment"): 1}
    lifecycle.request(free, "change_plan", actor="test", payload={"plan_id": plans["big"].id})
    wait_jobs(app)
    assert _kept() == _grouped() and (plans["big"].id, "active") in _kept()
    lifecycle.cancel(paid, actor="test")
    paid.status = "active"  # a change that is rolled back counts nothing
    db.session.flush()
    db.session.rollback()
    assert _kept() == _grouped()
    assert counts.by_status() == {"active": 1, "cancelled": 1}
    assert counts.live_by_plan() == {plans["big"].id: 1}
    assert counts.by_status("memory") == {"active": 1, "cancelled": 1} and counts.by_status("pds") == {}
    db.session.execute(db.delete(ServiceCount))
    db.session.commit()
    assert counts.recount() == 2 and _kept() == _grouped()


def test_the_migration_fills_names_hostnames_and_counts(tmp_path, monkeypatch):
    """Services made before 0010 get their display name, hostname and counts from it."""
    import subprocess
    import sys

    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/m.db"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PANEL_")}
    env.update(PANEL_SECRET_KEY="migration-test-secret-key", PANEL_PLUGINS="", PANEL_DATABASE_URL=url)
    root = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))

    def panel(*args):
        done = subprocess.run([sys.executable, "-m", "panel.cli", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    panel("db", "upgrade", "0006")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (id, email, password_hash, role, is_active) "
                             "VALUES (1, 'a@example.com', 'x', 'customer', 1)"))
        conn.execute(sa.text("INSERT INTO plans (id, slug, name, description, backend, options, active, sort_order) "
                             "VALUES (1, 'p', 'P', '', 'pds', '{}', 1, 0)"))
        conn.execute(sa.text(
            "INSERT INTO services (id, external_id, user_id, plan_id, backend, status, status_detail, params, "
            "backend_data, claim_key) VALUES "
            "(1, 'hp-1', 1, 1, 'pds', 'active', '', '{\"username\": \"alice\"}', '{}', 'alice.pds.example.com'), "
            "(2, 'hp-2', 1, 1, 'pds', 'failed', '', '{\"name\": \"shop\"}', '{\"host\": \"Shop.Example.com\"}', NULL)"))
    panel("db", "upgrade")
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT id, display_name, hostname FROM services ORDER BY id")).all()
        kept = conn.execute(sa.text("SELECT plan_id, status, n FROM service_counts ORDER BY status")).all()
    assert [tuple(r) for r in rows] == [(1, "alice", "alice.pds.example.com"), (2, "shop", "shop.example.com")]
    assert [tuple(r) for r in kept] == [(1, "active", 1), (1, "failed", 1)]


# --------------------------------------------------------------------------- the list pages

@pytest.fixture
def console(app, plans):
    ops = add_user("ops@example.com", role="operator")
    client = app.test_client()
    assert login(client, ops.email).status_code in (302, 303)
    return client


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr data-service="(\d+)"', html)]


def _bulk_services(plan: Plan, count: int, *, start: int = 0, status: str = "active") -> None:
    """``count`` services of ``count`` new customers, inserted in bulk (then the counts rebuilt)."""
    users = [{"email": f"bulk{start + i:06d}@example.com", "password_hash": "x", "role": "customer",
              "is_active_flag": True, "created_at": utcnow()} for i in range(count)]
    db.session.execute(db.insert(User), users)
    ids = db.session.scalars(db.select(User.id).where(User.email.like("bulk%")).order_by(User.id.desc())
                             .limit(count)).all()
    db.session.execute(db.insert(Service), [
        {"external_id": f"hp-bulk{start + i:012d}", "user_id": uid, "plan_id": plan.id, "backend": plan.backend,
         "status": status, "status_detail": "", "params": {"name": f"bulk{start + i}"}, "backend_data": {},
         "display_name": f"bulk{start + i}", "hostname": f"bulk{start + i}.example.net", "created_at": utcnow()}
        for i, uid in enumerate(ids)])
    db.session.commit()
    counts.recount()


def test_the_list_shows_name_hostname_customer_and_created(app, console, customer, plans):
    from corelib import wait_jobs

    svc = lifecycle.create_service(customer, plans["free"], {"name": "shop"}, actor="test")
    wait_jobs(app)
    html = console.get("/admin/").get_data(as_text=True)
    row = html[html.index(f'<tr data-service="{svc.id}"'):].split("</tr>")[0]
    assert "<td class=\"wrap\">shop</td>" in row and "shop.test" in row  # the name; the host the backend gave
    assert f'href="/admin/?customer={customer.id}"' in row and customer.email in row
    assert f'<time datetime="{svc.created_at.isoformat()}">{svc.created_at:%Y-%m-%d}</time>' in row
    only = console.get(f"/admin/?customer={customer.id}").get_data(as_text=True)
    assert _ids(only) == [svc.id] and 'id="customer-filter"' in only


def test_search_finds_by_name_hostname_email_number_and_external_id(app, console, customer, other_customer, plans):
    from corelib import wait_jobs

    a = lifecycle.create_service(customer, plans["free"], {"name": "alpha"}, actor="test")
    b = lifecycle.create_service(other_customer, plans["free"], {"name": "beta"}, actor="test")
    wait_jobs(app)
    search = lambda q: _ids(console.get("/admin/", query_string={"q": q}).get_data(as_text=True))  # noqa: E731
    assert search("alp") == [a.id]
    assert search("beta.te") == [b.id]  # the hostname's prefix
    assert search("bob@") == [b.id]  # the customer's email
    assert search(f"#{a.id}") == [a.id] and search(str(b.id)) == [b.id]
    assert search(b.external_id) == [b.id]
    assert search("%") == [] and search("_") == []  # taken literally
    assert search("zzz") == []


@pytest.mark.parametrize("bounds", ["collected", "wide"])
def test_search_pages_match_the_same_services_whether_collected_by_id_or_left_wide(app, console, plans, monkeypatch,
                                                                                  bounds):
    """The search collects each index's matches by id when they are few (issue 14); above its
    bounds an index keeps its plain condition. Both ways give the same services, newest first,
    paged both ways, with the other filters applied on top."""
    from panel.admin import routes

    _bulk_services(plans["free"], 130)
    db.session.execute(db.update(Service).where(Service.display_name == "bulk7").values(resource_id="remote-77"))
    db.session.execute(db.update(Service).where(Service.display_name.in_(["bulk10", "bulk11"])).values(status="failed"))
    db.session.commit()
    if bounds == "wide":
        monkeypatch.setattr(routes, "SEARCH_COLLECT", 3)
        monkeypatch.setattr(routes, "SEARCH_CUSTOMERS", 2)

    def pages(query: dict) -> list[int]:
        seen, path = [], None
        while True:
            page = console.get(path or "/admin/", query_string=None if path else query).get_data(as_text=True)
            seen += _ids(page)
            older = re.search(r'href="(/admin/\?[^"]*before=\d+[^"]*)"', page)
            if not older:
                return seen
            path = older.group(1).replace("&amp;", "&")

    by_name = {s.display_name: s.id for s in db.session.scalars(db.select(Service))}
    # bulk1, bulk10-19, bulk100-129: 41 by name and hostname, the oldest among 130
    expected = sorted((i for n, i in by_name.items() if n.startswith("bulk1")), reverse=True)
    assert len(expected) == 41 and pages({"q": "bulk1"}) == expected
    everything = sorted(by_name.values(), reverse=True)  # 130 by name, hostname and email: three pages
    assert len(everything) == 130 and pages({"q": "bulk"}) == everything
    newer = console.get("/admin/", query_string={"q": "bulk", "after": everything[100]}).get_data(as_text=True)
    assert _ids(newer) == everything[50:100]
    assert pages({"q": "bulk", "status": "active"}) == [
        i for i in everything if i not in (by_name["bulk10"], by_name["bulk11"])]
    assert pages({"q": "bulk", "status": "failed"}) == [by_name["bulk11"], by_name["bulk10"]]  # old, under 128 newer
    of = lambda prefix: sorted(db.session.scalars(db.select(Service.id).join(User)  # noqa: E731
                                                  .where(User.email.startswith(prefix))), reverse=True)
    assert len(of("bulk000007@")) == 1 and pages({"q": "bulk000007@"}) == of("bulk000007@")  # the email
    assert len(of("bulk00001")) == 10 and pages({"q": "bulk00001"}) == of("bulk00001")
    assert pages({"q": "remote-77"}) == [by_name["bulk7"]]
    assert pages({"q": "bulk1", "status": "failed"}) == [by_name["bulk11"], by_name["bulk10"]]
    assert pages({"q": "bulkx"}) == []


def test_keyset_pages_cover_every_service_once_with_a_fixed_page_size(app, console, plans):
    _bulk_services(plans["free"], 120)
    first = console.get("/admin/").get_data(as_text=True)
    seen = _ids(first)
    assert len(seen) == 50 and seen == sorted(seen, reverse=True)
    assert "Newer" not in first
    page = first
    while True:
        older = re.search(r'href="(/admin/\?before=\d+)"', page)
        if not older:
            break
        page = console.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
        seen += _ids(page)
    assert len(seen) == len(set(seen)) == 120
    newer = re.search(r'href="(/admin/\?after=\d+)"', page).group(1)
    assert _ids(console.get(newer).get_data(as_text=True)) == seen[50:100]
    failed = console.get("/admin/?status=failed").get_data(as_text=True)
    assert _ids(failed) == [] and "No services match." in failed
    customers = console.get("/admin/customers").get_data(as_text=True)
    assert len(re.findall(r'<tr data-user="', customers)) == 50 and "?before=" in customers


# --------------------------------------------------------------------------- statement counts

PAGES = ["/admin/", "/admin/?status=failed", "/admin/?status=active&backend=memory", "/admin/?q=bulk1",
         "/admin/?before=1000000", "/admin/customers", "/admin/customers?q=bulk", "/admin/plans",
         "/admin/operations", "/admin/operations?state=failed", "/admin/audit", "/admin/plugins"]


def _statements(client, app, path) -> int:
    from flask import g

    for _ in range(2):  # the second time: caches (plugin settings) warm, as on a running panel
        db.session.remove()
        g.pop("_login_user", None)  # the requests share the test's app context (and Flask-Login's cache in g)
        with recording(db.engine) as seen:
            response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
    return seen.count, seen


def test_operator_pages_and_a_provision_job_do_not_grow_with_the_number_of_services(make_app, postgres_server,
                                                                                   redis_server):
    """Each operator page, and a provision job, sends the same number of SQL statements with 3
    services as with 261 (more than five pages), at most 10 for a page."""
    from memory_backend import REMOTE

    REMOTE.__init__()
    # with Redis the orders' jobs wait in a queue nobody reads: the test runs them itself
    app = make_app(DATABASE_URL=postgres_server.create_database(), REDIS_URL=redis_server.url)
    with app.app_context():
        ops = add_user("ops@example.com", role="operator")
        customer = add_user("alice@example.com")
        plan = Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128})
        db.session.add(plan)
        db.session.commit()
        client = app.test_client()
        assert login(client, ops.email).status_code in (302, 303)

        customer_id, plan_id = customer.id, plan.id

        def provision_statements(name):
            svc = lifecycle.create_service(db.session.get(User, customer_id), db.session.get(Plan, plan_id),
                                           {"name": name}, actor="test")
            op_id = db.session.scalar(db.select(Operation.id).where(Operation.service_id == svc.id))
            db.session.remove()
            with recording(db.engine) as seen:
                assert jobs.run_operation(op_id) == "succeeded"
                db.session.remove()
            return seen

        _bulk_services(db.session.get(Plan, plan_id), 2)
        _bulk_services(db.session.get(Plan, plan_id), 1, start=100, status="failed")
        small = {path: _statements(client, app, path) for path in PAGES}
        small_job = provision_statements("first")
        _bulk_services(db.session.get(Plan, plan_id), 130, start=1000)
        _bulk_services(db.session.get(Plan, plan_id), 128, start=5000, status="failed")
        large = {path: _statements(client, app, path) for path in PAGES}
        large_job = provision_statements("second")
    for path in PAGES:
        (n_small, seen_small), (n_large, seen_large) = small[path], large[path]
        assert n_small == n_large, f"{path}: {n_small} statements with 4 services, {n_large} with 262:\n" \
                                   f"{seen_large.summary()}"
        assert n_large <= 10, f"{path}: {n_large} statements:\n{seen_large.summary()}"
    # 12 before add-ons (issue 9): the service's add-ons are read once per transaction (the
    # options the backend is given, then the completion's view of them): 14.
    assert small_job.count == large_job.count <= 14, large_job.summary()
    assert small_job.commits == 2, "a provision job is two transactions"

"""The audit log: operator actions from the console and the CLI, masked secrets, append-only, the
/admin/audit page and its filter."""
import io
import os
import subprocess
import sys

import pytest
from corelib import login, wait_jobs
from memory_backend import REMOTE

from panel.extensions import db
from panel.models import AuditEntry
from panel.models.audit import AppendOnlyError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entries(action=None):
    query = db.select(AuditEntry).order_by(AuditEntry.id)
    if action:
        query = query.where(AuditEntry.action == action)
    db.session.expire_all()
    return db.session.scalars(query).all()


def test_console_actions_are_recorded_with_who_what_and_where(client, app, customer, operator, plans):
    from panel.orders import place_order

    REMOTE.fail_next("provision", "permanent")
    svc = place_order(customer, "mem-free", {"name": "aud"}, actor="t").service
    wait_jobs(app)
    login(client, operator.email)
    client.post(f"/admin/services/{svc.id}/retry", environ_base={"REMOTE_ADDR": "203.0.113.7"})
    wait_jobs(app)
    client.post(f"/admin/services/{svc.id}/suspend")
    client.post(f"/admin/customers/{customer.id}/disable")
    client.post("/admin/plugins/memory/disable")
    good = b"plans: [{slug: x1, name: X, backend: memory, options: {size_mib: 4}}]"
    client.post("/admin/plans", data={"catalog": (io.BytesIO(good), "c.yaml")}, content_type="multipart/form-data")
    client.post("/admin/sweep")
    rows = entries()
    actions = [r.action for r in rows]
    assert actions == ["service.retry", "service.suspend", "user.disable", "plugin.disable", "plans.import",
                       "jobs.sweep"]
    retry = rows[0]
    assert retry.actor == "operator:ops@example.com" and retry.actor_id == operator.id
    assert (retry.target_type, retry.target_id) == ("service", str(svc.id))
    assert retry.before == {"status": "failed"} and retry.after["status"] == "provisioning"
    assert retry.ip_address == "203.0.113.7"
    assert rows[1].before == {"status": "active"}
    assert rows[2].before == {"active": True} and rows[2].after == {"active": False}
    assert rows[4].after["created"] == ["x1"]


def test_rows_are_append_only(app, operator):
    from panel import audit

    row = audit.record(operator, "service.suspend", ("service", "1"), before={"status": "active"})
    db.session.commit()
    row.detail = "changed"
    with pytest.raises(AppendOnlyError):
        db.session.commit()
    db.session.rollback()
    with pytest.raises(AppendOnlyError):
        db.session.delete(db.session.get(AuditEntry, row.id))
        db.session.commit()
    db.session.rollback()
    assert entries()[0].detail == ""


def test_secrets_are_masked(app, operator):
    from panel import audit

    audit.record(operator, "x.y", None, before={"api_token": "sekrit-1", "nested": {"password": "sekrit-2"}},
                 after={"url": "https://ok", "client_secret": "sekrit-3"})
    db.session.commit()
    row = entries()[0]
    assert "sekrit" not in str(row.before) + str(row.after)
    assert row.after["url"] == "https://ok"


def test_audit_page_lists_and_filters(client, app, customer, operator):
    from panel import audit

    audit.record(operator, "service.suspend", ("service", "5"), before={"status": "active"})
    audit.record(operator, "plugin.enable", ("plugin", "memory"))
    audit.record("cli", "user.create", ("user", "9"))
    db.session.commit()
    login(client, customer.email)
    assert client.get("/admin/audit").status_code == 404  # operators only
    client.post("/logout")
    login(client, operator.email)
    html = client.get("/admin/audit").get_data(as_text=True)
    assert html.count("data-audit=") == 3 and "service.suspend" in html and "cli:" in html
    html = client.get("/admin/audit?action=plugin.").get_data(as_text=True)
    assert html.count("data-audit=") == 1 and "plugin.enable" in html
    html = client.get("/admin/audit?target=service:5").get_data(as_text=True)
    assert html.count("data-audit=") == 1 and "service 5" in html
    html = client.get("/admin/audit?actor=cli").get_data(as_text=True)
    assert html.count("data-audit=") == 1 and "user.create" in html
    assert "Nothing recorded for this filter" in client.get("/admin/audit?actor=nobody").get_data(as_text=True)


def panel_cli(*args, db_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANEL_")}
    env.update({"PANEL_SECRET_KEY": "audit-test-secret-key-0", "PANEL_PLUGINS": "pds", "PANEL_DATABASE_URL": db_url})
    return subprocess.run([sys.executable, "-m", "panel.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_commands_that_change_things_are_recorded(tmp_path):
    import panel_pds  # noqa: F401  (the CLI below enables it: an import error must fail, not skip)
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/cli.db"
    assert panel_cli("db", "upgrade", db_url=url).returncode == 0
    steps = [("users", "create", "op@example.com", "--password", "longenough1", "--operator"),
             ("tokens", "create", "op@example.com"),
             ("plugins", "set", "pds", "api_token", "very-secret-token-1"),
             ("plugins", "set", "pds", "api_url", "https://deploy.example.com"),
             ("plugins", "unset", "pds", "api_url")]
    for step in steps:
        done = panel_cli(*step, db_url=url)
        assert done.returncode == 0, done.stderr
    rows = sa.create_engine(url).connect().execute(
        sa.text("SELECT actor, action, target_type, target_id, after FROM audit_log ORDER BY id")).all()
    assert [r.action for r in rows] == ["user.create", "token.create", "plugin.setting.set", "plugin.setting.set",
                                        "plugin.setting.unset"]
    assert all(r.actor.startswith("cli:") for r in rows)
    assert "very-secret-token-1" not in str(rows) and "longenough1" not in str(rows)
    assert '"value": "https://deploy.example.com"' in rows[3].after.replace("'", '"')


def test_operators_own_security_changes_are_recorded(client, app, operator, customer):
    import pyotp

    login(client, operator.email)
    client.post("/account", data={"pw-current": "password123", "pw-password": "newpassword1",
                                  "pw-confirm": "newpassword1", "pw-submit": "Change password"})
    page = client.get("/account/2fa").get_data(as_text=True)
    import re

    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    client.post("/account/2fa", data={"code": pyotp.TOTP(secret).now()})
    assert [r.action for r in entries()] == ["account.password", "account.2fa.enable"]
    assert "newpassword1" not in str([r.to_json() for r in entries()])
    other = app.test_client()
    with app.app_context():
        login(other, customer.email)
        other.post("/account", data={"pw-current": "password123", "pw-password": "newpassword2",
                                     "pw-confirm": "newpassword2", "pw-submit": "Change password"})
    assert len(entries()) == 2  # customers' own account changes are not operator actions


def test_csrf_failure_page_speaks_plainly(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    r = app.test_client().post("/login", data={"email": "a@example.com", "password": "x"})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "This form has expired" in html and "CSRF" not in html

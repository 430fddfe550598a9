"""Manage from the web (issue 12 section 3) and reconcile drift (section 2), with the memory backend
and a backend with typed settings: plugin settings in /admin/plugins from the JSON Schema (secrets
write-only, field-level errors, all or nothing, audited without secret values), an operator's note,
change of plan, force-terminate, the reconcile page's fix and adopt buttons, failed-remote drift."""
from __future__ import annotations

import io
import re
from typing import Literal

import pytest
from pydantic import Field, SecretStr

from corelib import add_user, login, wait_jobs
from memory_backend import REMOTE, MemoryPlugin
from panel import hookimpl, lifecycle
from panel.backends import MASK, Backend, Schema
from panel.extensions import db
from panel.models import AuditEntry, Plan, PluginSetting, Service, User
from panel.orders import place_order

SECRET = "knob-secret-token-9f8e7d6c"


class KnobsBackend(Backend):
    """A backend whose settings cover every field type the form renders."""

    name = "knobs"
    label = "Knobs"

    class Settings(Schema):
        api_url: str = Field(title="API URL", pattern=r"^https?://\S+$", description="e.g. https://api.example.com")
        api_token: SecretStr = Field(title="API token")
        timeout: int = Field(30, ge=1, le=300, json_schema_extra={"unit": "seconds"})
        verify_tls: bool = True
        region: Literal["eu", "us"] = "eu"
        nodes: list[dict] = Field([], description='JSON list, e.g. [{"id": 1}]')

    def test_connection(self):
        return f"knobs at {self.settings['api_url']}: ok"


class KnobsPlugin:
    @hookimpl
    def register_backends(self, register):
        register(KnobsBackend)


@pytest.fixture
def console(make_app):
    REMOTE.__init__()
    app = make_app(EXTRA_PLUGINS=[MemoryPlugin(), KnobsPlugin()], PLUGIN_ENV={"KNOBS_REGION": "us"})
    with app.app_context():
        add_user("ops@example.com", role="operator")
        add_user("alice@example.com")
        db.session.add_all([Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128}),
                            Plan(slug="mem-big", name="Memory big", backend="memory", options={"size_mib": 512})])
        db.session.commit()
        client = app.test_client()
        login(client, "ops@example.com")
        yield app, client


def audit_rows(action):
    return db.session.scalars(db.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all()


def section(html: str, name: str) -> str:
    start = html.index(f'id="plugin-{name}"')
    end = html.find('<section class="card plugin"', start + 1)
    return html[start:end if end > 0 else len(html)]


# --------------------------------------------------------------------------- plugin settings

def test_the_settings_form_has_the_schemas_field_types(console):
    app, client = console
    html = section(client.get("/admin/plugins").get_data(as_text=True), "knobs")
    assert re.search(r'<input[^>]*id="knobs-set_timeout"[^>]*type="number"', html) or \
        re.search(r'<input[^>]*type="number"[^>]*id="knobs-set_timeout"', html)
    timeout = re.search(r'<input[^>]*name="knobs-set_timeout"[^>]*>', html).group(0)
    assert 'min="1"' in timeout and 'max="300"' in timeout and 'value="30"' in timeout
    assert "Timeout (seconds)" in html
    assert re.search(r'<input[^>]*checked[^>]*name="knobs-set_verify_tls"|<input[^>]*name="knobs-set_verify_tls"'
                     r'[^>]*checked', html), "a checkbox, ticked by default"
    assert '<option selected value="us">us</option>' in html or '<option value="us" selected>us</option>' in html
    region = re.search(r'<select[^>]*name="knobs-set_region"[^>]*>', html).group(0)
    assert "disabled" in region, "a PANEL_PLUGIN_* value is read-only here"
    assert "from PANEL_PLUGIN_KNOBS_REGION (read-only here)" in html
    assert re.search(r'<textarea[^>]*name="knobs-set_nodes"', html)
    token = re.search(r'<input[^>]*name="knobs-set_api_token"[^>]*>', html).group(0)
    assert 'type="password"' in token and not re.search(r'value="[^"]', token)
    assert "API URL" in html and "e.g. https://api.example.com" in html


def test_saving_settings_stores_encrypts_audits_and_never_renders_a_secret_back(console):
    app, client = console
    r = client.post("/admin/plugins/knobs/settings", data={
        "knobs-set_api_url": "https://api.knobs.test", "knobs-set_api_token": SECRET, "knobs-set_timeout": "45",
        "knobs-set_verify_tls": "y", "knobs-set_nodes": '[{"id": 1}]'})
    assert r.status_code == 303, r.get_data(as_text=True)[:500]
    from panel.plugins import raw_settings, settings_for

    settings = settings_for("knobs")
    assert settings["api_url"] == "https://api.knobs.test" and settings["timeout"] == 45
    assert settings["api_token"].reveal() == SECRET and settings["nodes"] == [{"id": 1}]
    assert settings["region"] == "us", "the environment still wins"
    row = db.session.scalar(db.select(PluginSetting).where(PluginSetting.plugin == "knobs",
                                                           PluginSetting.key == "api_token"))
    assert row.secret and SECRET not in row.value
    entries = {e.after["setting"]: e.after["value"] for e in audit_rows("plugin.setting.set")}
    assert entries == {"api_url": "https://api.knobs.test", "api_token": MASK, "timeout": 45, "nodes": [{"id": 1}]}
    assert all(e.actor == "operator:ops@example.com" for e in audit_rows("plugin.setting.set"))
    page = client.get("/admin/plugins").get_data(as_text=True)
    assert SECRET not in page
    token = re.search(r'<input[^>]*name="knobs-set_api_token"[^>]*>', section(page, "knobs")).group(0)
    assert not re.search(r'value="[^"]', token) and MASK not in token, "not even a masked value in the input"
    assert "stored (encrypted)" in token
    # an empty secret keeps the stored one; an unchanged form stores nothing
    again = client.post("/admin/plugins/knobs/settings", data={
        "knobs-set_api_url": "https://api.knobs.test", "knobs-set_api_token": "", "knobs-set_timeout": "45",
        "knobs-set_verify_tls": "y", "knobs-set_nodes": '[{"id": 1}]'}, follow_redirects=True)
    assert "knobs: nothing changed." in again.get_data(as_text=True)
    assert raw_settings("knobs")[0]["api_token"] == SECRET and len(audit_rows("plugin.setting.set")) == 4
    # unticking the box stores false; emptying a plain setting goes back to its default; clear removes the secret
    client.post("/admin/plugins/knobs/settings", data={
        "knobs-set_api_url": "https://api.knobs.test", "knobs-set_timeout": "", "knobs-set_nodes": '[{"id": 1}]',
        "knobs-clear_api_token": "y"})
    values, source = raw_settings("knobs")
    assert values["verify_tls"] is False and source["timeout"] == "default" and values["timeout"] == 30
    assert "api_token" not in values
    unset = {e.after["setting"] for e in audit_rows("plugin.setting.unset")}
    assert unset == {"timeout", "api_token"}


def test_bad_settings_get_field_errors_a_4xx_and_nothing_is_stored(console):
    app, client = console
    r = client.post("/admin/plugins/knobs/settings", data={
        "knobs-set_api_url": "ftp://nope", "knobs-set_api_token": SECRET, "knobs-set_timeout": "0",
        "knobs-set_nodes": "[not json"})
    assert r.status_code == 422
    html = section(r.get_data(as_text=True), "knobs")
    assert re.search(r'data-field="knobs-set_api_url">has an invalid format<', html)
    assert re.search(r'data-field="knobs-set_timeout">must be at least 1 seconds<', html)
    assert 'data-field="knobs-set_nodes">is not valid JSON' in html
    assert SECRET not in r.get_data(as_text=True), "a typed secret is not echoed back"
    assert db.session.scalar(db.select(db.func.count()).select_from(PluginSetting)
                             .where(PluginSetting.plugin == "knobs")) == 0
    assert audit_rows("plugin.setting.set") == []


def test_test_connection_enable_and_disable_from_the_page(console):
    app, client = console
    client.post("/admin/plugins/knobs/settings", data={"knobs-set_api_url": "https://api.knobs.test",
                                                      "knobs-set_api_token": SECRET})
    page = client.post("/admin/plugins/knobs/test", follow_redirects=True).get_data(as_text=True)
    assert "knobs: knobs at https://api.knobs.test: ok" in page
    client.post("/admin/plugins/knobs/enable")
    from panel.plugins import is_enabled

    assert is_enabled("knobs") and audit_rows("plugin.enable")[-1].target_id == "knobs"
    client.post("/admin/plugins/knobs/disable")
    assert not is_enabled("knobs")


def test_customers_cannot_reach_the_settings(console):
    app, client = console
    client.post("/logout")
    other = client
    login(other, "alice@example.com")
    assert other.post("/admin/plugins/knobs/settings", data={"knobs-set_api_url": "https://x.test"}).status_code == 404
    assert other.get("/admin/reconcile").status_code == 404


# --------------------------------------------------------------------------- operator actions on a service

def _live(app, name="site"):
    service = place_order(User.by_email("alice@example.com"), "mem-free", {"name": name},
                          actor="customer:alice@example.com").service
    wait_jobs(app)
    assert service.status == "active"
    return service


def test_a_note_goes_to_the_event_log_and_the_audit_log_but_not_to_the_customer(console):
    from panel import messages

    app, client = console
    svc = _live(app)
    r = client.post(f"/admin/services/{svc.id}/note", data={"note": "customer called: slow start (ticket #88)"})
    assert r.status_code == 303
    note = svc.events[-1]
    assert note.kind == "note" and "customer called: slow start (ticket #88)" in note.detail
    assert note.actor == "operator:ops@example.com"
    with app.test_request_context():
        assert all("ticket #88" not in item["text"] for item in messages.history(svc))
    assert audit_rows("service.note")[-1].after == {"note": "customer called: slow start (ticket #88)"}
    empty = client.post(f"/admin/services/{svc.id}/note", data={"note": "  "}, follow_redirects=True)
    assert "Write the note first." in empty.get_data(as_text=True)


def test_change_plan_without_a_subscription_goes_through_the_lifecycle(console):
    app, client = console
    svc = _live(app)
    page = client.get(f"/admin/services/{svc.id}").get_data(as_text=True)
    assert '<option value="mem-big">' in page and 'id="change-plan"' in page
    r = client.post(f"/admin/services/{svc.id}/change-plan", data={"plan": "mem-big"})
    assert r.status_code == 303
    wait_jobs(app)
    assert svc.plan.slug == "mem-big" and REMOTE.objects[svc.external_id]["size"] == 512
    assert [op.action for op in svc.operations][-1] == "change_plan"
    entry = audit_rows("service.change_plan")[-1]
    assert entry.before == {"plan": "mem-free"} and entry.after["plan"] == "mem-big"
    refused = client.post(f"/admin/services/{svc.id}/change-plan", data={"plan": "mem-big"}, follow_redirects=True)
    assert "Choose one of the offered plans." in refused.get_data(as_text=True), "not its own plan"


def test_force_terminate_ends_the_service_even_when_the_backend_refuses(console):
    app, client = console
    svc = _live(app)
    REMOTE.fail_next("terminate", "permanent")
    REMOTE.fail_next("terminate", "permanent")
    lifecycle.request(svc, "terminate", actor="operator:ops@example.com")
    wait_jobs(app)
    assert svc.status == "failed", "a plain terminate the backend refuses fails"
    r = client.post(f"/admin/services/{svc.id}/force-terminate", data={"reason": "node lost"})
    assert r.status_code == 303
    wait_jobs(app)
    db.session.expire_all()
    assert svc.status == "terminated" and svc.claim_key is None
    op = svc.operations[-1]
    assert op.action == "terminate" and op.payload["force"] is True and op.state == "succeeded"
    assert "rejected" in op.last_error
    assert "terminated by force although the backend could not delete it" in svc.events[-1].detail
    assert audit_rows("service.force_terminate")[-1].after == {"status": "terminating", "reason": "node lost"}


def test_force_terminate_supersedes_waiting_work_and_forces_a_running_terminate(console):
    app, client = console
    svc = _live(app)
    REMOTE.fail_next("terminate", "transient", "transient", "transient", "transient")
    lifecycle.request(svc, "terminate", actor="operator:ops@example.com")
    wait_jobs(app)
    assert svc.status == "failed", "gave up after the retries"
    lifecycle.retry(svc, actor="operator:ops@example.com")  # due again, one more transient failure
    client.post(f"/admin/services/{svc.id}/force-terminate", data={})
    wait_jobs(app)
    db.session.expire_all()
    assert svc.status == "terminated"
    assert len([o for o in svc.operations if o.action == "terminate"]) == 1, "the running terminate was forced"


def test_purge_is_offered_only_where_the_backend_keeps_data(console):
    app, client = console
    svc = _live(app)
    lifecycle.request(svc, "terminate", actor="operator:ops@example.com")
    wait_jobs(app)
    page = client.get(f"/admin/services/{svc.id}").get_data(as_text=True)
    assert 'id="purge"' not in page and 'id="force-terminate"' not in page
    refused = client.post(f"/admin/services/{svc.id}/purge", follow_redirects=True).get_data(as_text=True)
    assert "the memory backend keeps no data after termination" in refused


# --------------------------------------------------------------------------- reconcile: drift and adopt

def test_active_here_failed_remotely_becomes_failed_with_the_reason_and_a_retry(console):
    from panel.cli import cli

    app, client = console
    svc = _live(app)
    REMOTE.objects[svc.external_id].update(state="failed", detail="install script exited 1")
    runner = app.test_cli_runner()
    report = runner.invoke(cli, ["reconcile", "memory"])
    assert report.exit_code == 1
    assert "failed-remote" in report.output and "active here, failed on the backend: install script exited 1" \
        in report.output
    runner.invoke(cli, ["reconcile", "memory", "--fix"])
    db.session.expire_all()
    assert svc.status == "failed"
    assert svc.status_detail == (f"reconcile: the memory backend reports m-{svc.external_id} failed: install "
                                 "script exited 1")
    assert svc.resource_id == f"m-{svc.external_id}", "the remote id is kept"
    page = client.get(f"/admin/services/{svc.id}").get_data(as_text=True)
    assert 'id="retry"' in page
    REMOTE.objects[svc.external_id].update(state="active", detail="")
    client.post(f"/admin/services/{svc.id}/retry")
    wait_jobs(app)
    assert svc.status == "active"


def test_the_reconcile_page_fixes_drift_and_adopts_with_a_mapping_file(console):
    app, client = console
    svc = _live(app)
    REMOTE.objects.pop(svc.external_id)
    REMOTE.objects["hp-stranger"] = {"state": "active", "name": "stranger", "size": 512}
    REMOTE.objects["hp-nobody"] = {"state": "suspended", "name": "nobody", "size": 128}
    page = client.get("/admin/reconcile/memory").get_data(as_text=True)
    assert 'data-kind="missing"' in page and 'data-kind="unknown"' in page and "hp-stranger" in page
    assert 'id="fix"' in page and 'id="adopt-button"' in page
    fixed = client.post("/admin/reconcile/memory/fix").get_data(as_text=True)
    assert "marked failed (retry rebuilds it)" in fixed and "1 drift(s) fixed" in fixed
    db.session.expire_all()
    assert svc.status == "failed"
    mapping = b"remote,email\nhp-stranger,alice@example.com\n"
    r = client.post("/admin/reconcile/memory/adopt", data={"plan": "", "mapping": (io.BytesIO(mapping), "map.csv")},
                    content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 200
    assert "examined 2 / adopted 1 / events inserted 2 / skipped 1" in html
    assert "hp-nobody" in html and "no customer: the object names none" in html
    adopted = db.session.scalar(db.select(Service).where(Service.external_id == "hp-stranger"))
    assert adopted.plan.slug == "mem-big" and adopted.params == {"name": "stranger"} and adopted.status == "active"
    assert audit_rows("reconcile.adopt")[-1].after["adopted"] == [adopted.id]
    bad = client.post("/admin/reconcile/memory/adopt", data={"mapping": (io.BytesIO(b"email\nx@y.z\n"), "m.csv")},
                      content_type="multipart/form-data", follow_redirects=True)
    assert "Nothing adopted: the first line must name the columns: remote,email[,plan]" in bad.get_data(as_text=True)
    wrong_type = client.post("/admin/reconcile/memory/adopt", data={"mapping": (io.BytesIO(b"x"), "m.exe")},
                             content_type="multipart/form-data", follow_redirects=True)
    assert "Upload a .csv file." in wrong_type.get_data(as_text=True)

"""The ``panel`` command group: users, tokens, plans, plugins (secrets encrypted), sweep."""
import pytest

from panel.extensions import db
from panel.models import ApiToken, Plan, PluginSetting, User


class Runner:
    """Invoke the real ``panel`` command group against the test app."""

    def __init__(self, app):
        self.runner = app.test_cli_runner()

    def invoke(self, args):
        from panel.cli import cli

        return self.runner.invoke(cli, args=args)


@pytest.fixture
def runner(app):
    return Runner(app)


def test_users_create(runner):
    r = runner.invoke(args=["users", "create", "Op@Example.com", "--password", "longpassword", "--operator"])
    assert r.exit_code == 0, r.output
    user = User.by_email("op@example.com")
    assert user.is_operator and user.check_password("longpassword")
    r = runner.invoke(args=["users", "create", "x@example.com", "--password", "short"])
    assert r.exit_code != 0 and "at least 8 characters" in r.output


def test_tokens_create_prints_a_working_token(runner, app, customer):
    r = runner.invoke(args=["tokens", "create", customer.email])
    token = r.output.strip()
    assert r.exit_code == 0 and token.startswith("hp_")
    assert ApiToken.authenticate(token).id == customer.id
    client = app.test_client()
    assert client.get("/api/v1/services", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert runner.invoke(args=["tokens", "create", "nobody@example.com"]).exit_code != 0


def test_plans_import_reports_errors_and_imports_nothing(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("plans: [{slug: a, name: A, backend: memory, options: {size_mib: -1}}]")
    r = runner.invoke(args=["plans", "import", str(bad)])
    assert r.exit_code != 0 and "plan a: options.size_mib: must be at least 1" in r.output
    good = tmp_path / "good.yaml"
    good.write_text("plans: [{slug: a, name: A, backend: memory, options: {size_mib: 5}}]")
    r = runner.invoke(args=["plans", "import", str(good)])
    assert r.exit_code == 0 and "created 1" in r.output
    assert runner.invoke(args=["plans", "import", str(good)]).output.strip().endswith("unchanged 1")
    assert Plan.by_slug("a").options == {"size_mib": 5}


def test_plugins_set_encrypts_secrets_and_list_masks_them(runner, app):
    r = runner.invoke(args=["plugins", "set", "memory", "api_key", "key-abcdef-123456"])
    assert r.exit_code == 0, r.output
    row = db.session.scalar(db.select(PluginSetting).where(PluginSetting.key == "api_key"))
    assert row.secret and "key-abcdef-123456" not in row.value
    from panel.plugins import settings_for

    assert settings_for("memory")["api_key"].reveal() == "key-abcdef-123456"
    out = runner.invoke(args=["plugins", "list"]).output
    assert "key-abcdef-123456" not in out and "api_key = ••••••••" in out and "memory" in out
    r = runner.invoke(args=["plugins", "set", "memory", "nope", "x"])
    assert r.exit_code != 0 and "is not a setting of memory" in r.output


def test_plugins_enable_disable_controls_ordering(runner, app, customer, plans):
    from panel.orders import OrderError, place_order

    assert runner.invoke(args=["plugins", "disable", "memory"]).exit_code == 0
    with pytest.raises(OrderError) as info:
        place_order(customer, "mem-free", {"name": "x"}, actor="t")
    assert info.value.code == "backend_unavailable"
    assert runner.invoke(args=["plugins", "enable", "memory"]).exit_code == 0
    assert place_order(customer, "mem-free", {"name": "x"}, actor="t").service.id


def test_plugins_test_reports_typed_errors(runner):
    r = runner.invoke(args=["plugins", "test", "memory"])
    assert r.exit_code != 0 and "test_connection is not implemented" in r.output


def test_reconcile_reports_and_fixes_drift(runner, app, customer, plans):
    from corelib import wait_jobs
    from memory_backend import REMOTE

    from panel.orders import place_order

    gone = place_order(customer, "mem-free", {"name": "gone"}, actor="t").service
    wait_jobs(app)
    REMOTE.objects.pop(gone.external_id)
    REMOTE.objects["hp-stranger"] = {"state": "active"}
    r = runner.invoke(args=["reconcile", "memory"])
    assert r.exit_code == 1
    assert "missing" in r.output and gone.external_id in r.output and "unknown" in r.output and "hp-stranger" in r.output
    r = runner.invoke(args=["reconcile", "memory", "--fix"])
    db.session.expire_all()
    assert gone.status == "failed" and "reconcile" in gone.status_detail
    from panel import lifecycle

    lifecycle.retry(gone, actor="op")
    wait_jobs(app)
    assert gone.status == "active" and gone.external_id in REMOTE.objects

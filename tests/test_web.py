"""Customer and operator pages through the Flask test client (the browser test drives Chromium)."""
import re

from corelib import login, wait_jobs
from memory_backend import REMOTE

from panel.extensions import db
from panel.models import Service, User


def test_signup_logs_in_and_hashes_the_password(client, app):
    r = client.post("/signup", data={"email": "New@Example.com", "password": "longenough1", "confirm": "longenough1"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/plans")
    user = User.by_email("new@example.com")
    assert user.email == "new@example.com" and user.password_hash.startswith("$argon2id$")
    assert client.get("/services").status_code == 200


def test_signup_field_errors(client, customer):
    r = client.post("/signup", data={"email": "alice@example.com", "password": "short", "confirm": "other"})
    html = r.get_data(as_text=True)
    assert "Use at least 8 characters." in html and "The passwords do not match." in html
    r = client.post("/signup", data={"email": "alice@example.com", "password": "longenough1", "confirm": "longenough1"})
    assert "An account with this email already exists." in r.get_data(as_text=True)


def test_login_is_rate_limited(make_app):
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_LIMIT="3 per minute")
    client = app.test_client()
    codes = [client.post("/login", data={"email": "x@example.com", "password": "wrongwrong"}).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_csrf_is_enforced_on_forms(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    r = client.post("/signup", data={"email": "c@example.com", "password": "longenough1", "confirm": "longenough1"})
    assert r.status_code == 400
    with app.app_context():
        assert User.by_email("c@example.com") is None


def test_order_form_shows_field_errors_then_orders(client, app, customer, plans):
    login(client, customer.email)
    r = client.post("/order/mem-free", data={"param_name": "Bad Name"})
    html = r.get_data(as_text=True)
    assert 'data-field="param_name"' in html and "invalid format" in html
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0
    r = client.post("/order/mem-free", data={"param_name": "good"})
    assert r.status_code == 302
    sid = int(re.search(r"/services/(\d+)", r.headers["Location"]).group(1))
    wait_jobs(app)
    page = client.get(f"/services/{sid}").get_data(as_text=True)
    assert 'data-status="active"' in page and "good.test" in page
    assert "s3cret-root-pw" not in page and 'data-credential="root_password"' in page  # revealed on request only
    assert "memory" in page and "MiB" in page


def test_customer_sees_only_their_services(client, app, customer, other_customer, plans):
    from panel.orders import place_order

    theirs = place_order(other_customer, "mem-free", {"name": "theirs"}, actor="t").service
    wait_jobs(app)
    login(client, customer.email)
    assert client.get(f"/services/{theirs.id}").status_code == 404
    assert client.get(f"/services/{theirs.id}/status.json").status_code == 404
    assert "theirs" not in client.get("/services").get_data(as_text=True)


def test_status_json_reports_progress(client, app, customer, plans):
    from panel.orders import place_order

    svc = place_order(customer, "mem-free", {"name": "p1"}, actor="t").service
    wait_jobs(app)
    login(client, customer.email)
    data = client.get(f"/services/{svc.id}/status.json").get_json()
    assert data["status"] == "active" and data["operation"] is None


def test_operator_pages_filter_show_failures_and_retry(client, app, customer, operator, plans):
    from panel.orders import place_order

    REMOTE.fail_next("provision", "permanent")
    bad = place_order(customer, "mem-free", {"name": "bad"}, actor="t").service
    good = place_order(customer, "mem-free", {"name": "good"}, actor="t").service
    wait_jobs(app)
    assert bad.status == "failed" or good.status == "failed"
    failed = bad if bad.status == "failed" else good
    login(client, operator.email)
    html = client.get("/admin/?status=failed").get_data(as_text=True)
    assert f'data-service="{failed.id}"' in html and "hostname is already taken" in html and "Retry" in html
    other = good if failed is bad else bad
    assert f'data-service="{other.id}"' not in html
    assert f'data-service="{other.id}"' in client.get("/admin/?backend=memory").get_data(as_text=True)
    detail = client.get(f"/admin/services/{failed.id}").get_data(as_text=True)
    assert "Event log" in detail and "provision failed after 1 attempt(s)" in detail
    r = client.post(f"/admin/services/{failed.id}/retry")
    assert r.status_code == 302
    wait_jobs(app)
    assert failed.status == "active"


def test_customers_cannot_reach_operator_pages(client, customer):
    login(client, customer.email)
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/plugins").status_code == 404


def test_customer_cancels_a_free_service(client, app, customer, plans):
    from panel.orders import place_order

    svc = place_order(customer, "mem-free", {"name": "bye"}, actor="t").service
    wait_jobs(app)
    login(client, customer.email)
    client.post(f"/services/{svc.id}/cancel")
    wait_jobs(app)
    assert svc.status == "terminated" and svc.external_id not in REMOTE.objects


def test_plugin_page_masks_secrets(client, app, operator):
    from panel.plugins import set_setting

    set_setting("memory", "api_key", "very-secret-key-123")
    login(client, operator.email)
    html = client.get("/admin/plugins").get_data(as_text=True)
    assert "very-secret-key-123" not in html and "••••••••" in html and "test-1" in html


def test_operator_imports_a_catalog_from_the_plans_page(client, app, operator):
    import io

    from panel.models import Plan

    login(client, operator.email)
    bad = b"plans: [{slug: x1, name: X, backend: memory, options: {size_mib: 0}}]"
    r = client.post("/admin/plans", data={"catalog": (io.BytesIO(bad), "c.yaml")}, content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert "plan x1: options.size_mib: must be at least 1 MiB" in html
    assert Plan.by_slug("x1") is None
    good = b"plans: [{slug: x1, name: X, backend: memory, options: {size_mib: 4}}]"
    r = client.post("/admin/plans", data={"catalog": (io.BytesIO(good), "c.yaml")}, content_type="multipart/form-data")
    assert r.status_code == 302
    assert Plan.by_slug("x1").options == {"size_mib": 4}
    assert 'data-plan="x1"' in client.get("/admin/plans").get_data(as_text=True)
    r = client.post("/admin/plans", data={"catalog": (io.BytesIO(good), "c.txt")}, content_type="multipart/form-data")
    assert "Upload a .yaml file." in r.get_data(as_text=True)


def test_account_page_creates_and_revokes_tokens(client, app, customer):
    login(client, customer.email)
    html = client.post("/account", data={"tok-name": "laptop", "tok-submit": "Create token"}).get_data(as_text=True)
    token = re.search(r"<code>(hp_[A-Za-z0-9_-]+)</code>", html).group(1)
    assert client.get("/api/v1/services", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    page = client.get("/account").get_data(as_text=True)
    assert "laptop" in page and token not in page  # shown once only
    from panel.models import ApiToken

    row = db.session.scalar(db.select(ApiToken).where(ApiToken.name == "laptop"))
    assert client.post(f"/account/tokens/{row.id}/revoke").status_code == 302
    assert client.get("/api/v1/services", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_account_page_changes_the_password(client, app, customer, other_customer):
    login(client, customer.email)
    r = client.post("/account", data={"pw-current": "wrong-one", "pw-password": "newpassword1",
                                      "pw-confirm": "newpassword1", "pw-submit": "Change password"})
    assert "This is not your current password." in r.get_data(as_text=True)
    r = client.post("/account", data={"pw-current": "password123", "pw-password": "newpassword1",
                                      "pw-confirm": "newpassword1", "pw-submit": "Change password"})
    assert r.status_code == 302
    db.session.expire_all()
    assert User.by_email(customer.email).check_password("newpassword1")
    from panel.models import ApiToken

    theirs, _ = ApiToken.issue(other_customer, "x")
    db.session.commit()
    assert client.post(f"/account/tokens/{theirs.id}/revoke").status_code == 404


def test_operator_disables_and_enables_an_account(client, app, customer, operator):
    from corelib import token_for

    headers = token_for(customer)
    login(client, operator.email)
    assert 'data-user="%d"' % customer.id in client.get("/admin/customers").get_data(as_text=True)
    client.post(f"/admin/customers/{customer.id}/disable")
    db.session.expire_all()
    assert not customer.is_active
    assert client.get("/api/v1/services", headers=headers).status_code == 403
    with app.app_context():  # a fresh context: Flask-Login caches the user on g, which the test shares
        page = login(app.test_client(), customer.email).get_data(as_text=True)
        assert "This account is disabled." in page and "Wrong email or password." not in page
    client.post(f"/admin/customers/{customer.id}/enable")
    db.session.expire_all()
    assert customer.is_active
    client.post(f"/admin/customers/{operator.id}/disable")
    db.session.expire_all()
    assert operator.is_active  # not yourself

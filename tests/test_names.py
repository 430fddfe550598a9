"""Names that belong to the customer: DNS TXT verification of a hostname outside the operator's
domains (against a loopback DNS stand-in), default names reserved for their owner, and "will be"
instead of silent rewriting. The real PDS plugin and its stand-in provide hostnames."""
from __future__ import annotations

import pytest
from corelib import add_user, configure_pds, login, wait_jobs
from dns_standin import DnsStandIn

from panel.extensions import db
from panel.models import DomainVerification, Service

import panel_pds  # noqa: F401,E402  (our plugin: an import error must fail, not skip)


@pytest.fixture
def dns_server():
    server = DnsStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def pds_app(make_app, dns_server):
    from panel.catalog import import_catalog
    from panel_pds.standin import PdsStandIn

    standin = PdsStandIn(token="names-token").start()
    app = make_app(plugins=["pds"], DNS_RESOLVERS=f"127.0.0.1:{dns_server.port}", OWN_DOMAINS="hostpanel.example")
    with app.app_context():
        configure_pds(standin.url, "names-token")
        import_catalog("plans: [{slug: pds-free, name: PDS Free, backend: pds, options: {disksize_gb: 5}}]")
        yield app, standin
    standin.stop()


def test_a_foreign_hostname_is_refused_until_its_txt_record_is_found(pds_app, dns_server):
    app, standin = pds_app
    user = add_user("jane@example.org")
    client = app.test_client()
    login(client, user.email)
    r = client.post("/order/pds-free", data={"param_username": "jane", "param_hostname": "pds.jane.example.org"})
    assert r.status_code == 422 and "is not verified yet" in r.get_data(as_text=True)
    assert standin.deploys() == []
    client.post("/domains", data={"hostname": "PDS.Jane.Example.org."})
    row = db.session.scalar(db.select(DomainVerification))
    assert row.hostname == "pds.jane.example.org" and row.status == "pending"
    page = client.get("/domains").get_data(as_text=True)
    assert "_hostpanel-challenge.pds.jane.example.org" in page and row.record_value in page
    client.post(f"/domains/{row.id}/check")
    db.session.refresh(row)
    assert row.status == "pending" and "No TXT record" in row.last_error
    dns_server.set_txt("_hostpanel-challenge.pds.jane.example.org", "something-else")
    client.post(f"/domains/{row.id}/check")
    db.session.refresh(row)
    assert row.status == "pending" and "none holds the value" in row.last_error
    dns_server.set_txt("_hostpanel-challenge.pds.jane.example.org", "v=spf1 -all", row.record_value)
    from panel import names

    assert names.check_pending() == 1  # what the worker runs every PANEL_DOMAIN_CHECK_INTERVAL
    db.session.refresh(row)
    assert row.status == "verified"
    assert "_hostpanel-challenge.pds.jane.example.org" in dns_server.queries
    r = client.post("/order/pds-free", data={"param_username": "jane", "param_hostname": "pds.jane.example.org"})
    assert r.status_code == 302, r.get_data(as_text=True)[:400]
    wait_jobs(app)
    assert standin.deploys()[0]["hostname"] == "pds.jane.example.org"


def test_someone_elses_verification_does_not_count(pds_app, dns_server):
    app, _ = pds_app
    owner, other = add_user("owner@example.org"), add_user("mallory@example.net")
    row = DomainVerification(user_id=owner.id, hostname="pds.owner.example.org", status="verified")
    db.session.add(row)
    db.session.commit()
    client = app.test_client()
    login(client, other.email)
    r = client.post("/order/pds-free", data={"param_username": "mal", "param_hostname": "pds.owner.example.org"})
    assert r.status_code == 422 and "is not verified yet" in r.get_data(as_text=True)
    r = client.post("/api/v1/orders", json={"plan": "pds-free", "params": {"hostname": "pds.google.com"}},
                    headers=_token(other))
    assert r.status_code == 422 and "not verified" in r.get_json()["error"]["fields"]["hostname"]


def _token(user):
    from corelib import token_for

    return token_for(user)


def test_names_under_our_domains_need_no_dns_and_default_names_are_reserved(pds_app):
    app, standin = pds_app
    alice, bob = add_user("alice@example.com"), add_user("bob@example.com")
    client = app.test_client()
    login(client, bob.email)
    r = client.post("/order/pds-free", data={"param_username": "alice"})
    assert r.status_code == 422 and "belongs to another account" in r.get_data(as_text=True)
    r = client.post("/order/pds-free", data={"param_hostname": "alice.pds.example.com"})
    assert r.status_code == 422 and "belongs to another account" in r.get_data(as_text=True)
    r = client.post("/order/pds-free", data={"param_username": "bobby"})
    assert r.status_code == 302  # under pds.example.com: no DNS proof needed
    client.post("/logout")
    login(client, alice.email)
    r = client.post("/order/pds-free", data={})
    assert r.status_code == 302  # alice's own default name is hers
    wait_jobs(app)
    assert sorted(d["hostname"] for d in standin.deploys()) == ["alice.pds.example.com", "bobby.pds.example.com"]


def test_the_same_default_for_two_accounts_goes_to_the_first_who_orders(pds_app):
    app, _ = pds_app
    first, second = add_user("sam@one.example"), add_user("sam@two.example")
    client = app.test_client()
    login(client, first.email)
    assert client.post("/order/pds-free", data={}).status_code == 302
    wait_jobs(app)
    client.post("/logout")
    login(client, second.email)
    r = client.post("/order/pds-free", data={})
    assert r.status_code == 422 and "already in use" in r.get_data(as_text=True)


def test_characters_that_cannot_be_used_are_explained_before_ordering(pds_app):
    app, standin = pds_app
    user = add_user("jm@example.com")
    client = app.test_client()
    login(client, user.email)
    preview = client.get("/order/pds-free/preview?param_username=J%C3%BCrgen+M%C3%BCller").get_json()
    assert preview["fields"]["username"]["value"] == "j-rgen-m-ller"
    assert "j-rgen-m-ller" in preview["fields"]["username"]["note"]
    r = client.post("/order/pds-free", data={"param_username": "Jürgen Müller"})
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and "it will be “j-rgen-m-ller”" in html and 'value="j-rgen-m-ller"' in html
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0
    r = client.post("/order/pds-free", data={"param_username": "j-rgen-m-ller"})
    assert r.status_code == 302
    wait_jobs(app)
    assert standin.deploys()[0]["username"] == "j-rgen-m-ller"
    assert client.get("/order/pds-free/preview?param_hostname=https%3A%2F%2F").get_json()["fields"]["hostname"]["error"]


def test_our_own_domains_are_not_offered_for_verification(pds_app):
    app, _ = pds_app
    user = add_user("own@example.com")
    client = app.test_client()
    login(client, user.email)
    r = client.post("/domains", data={"hostname": "x.hostpanel.example"})
    assert r.status_code == 422 and "no verification is needed" in r.get_data(as_text=True)
    r = client.post("/domains", data={"hostname": "https://bad/"})
    assert r.status_code == 422


def test_panel_domains_check_verifies_from_the_command_line(pds_app, dns_server):
    app, _ = pds_app
    user = add_user("cli@example.org")
    from panel import names

    row = names.start(user, "pds.cli.example.org")
    dns_server.set_txt(row.record_name, row.record_value)
    from panel.cli import domains_check

    result = app.test_cli_runner().invoke(domains_check)
    assert result.exit_code == 0 and "1 hostname(s) verified" in result.output
    db.session.refresh(row)
    assert row.status == "verified"

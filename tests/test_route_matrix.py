"""The route matrix: every route that takes an object id or name, generated from ``app.url_map``.

For each such route and each method it accepts, customer B (logged in with a session, and with a
bearer token) asks for every object of customer A: the answer is 404 or 403 (or "log in" where that
kind of credential is not accepted), the body shows nothing of A's, and nothing changed in the
database, at the backend or in Stripe. A control then asks as someone who may (A, or an operator
for operator-only routes) and must not be refused, so a wrong id or a dead route cannot pass. A
route added later is covered without a new test; an argument the matrix does not know how to fill
fails the test until it is added to ``ID_ARGUMENTS``. Routes without an id that list objects
(``/services``, ``/billing``...) are checked to show B nothing of A's.

The app is the real one: every installed plugin loaded (their blueprints too), Stripe configured
against the loopback localstripe, jobs in-process against the memory backend.
"""
from __future__ import annotations

import itertools
import os
import secrets as _secrets
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from corelib import BASE_CONFIG, add_user, login, token_for
from memory_backend import REMOTE

from panel import crypto
from panel.extensions import db
from panel.models import (ApiToken, DomainVerification, Operation, OutboundMail, Plan, Service, ServiceEvent, UsageSample,
                          UserSession)
from panel.models.base import utcnow
from panel.models.services import STATUSES

PLUGINS = ("pds", "pterodactyl", "docker", "kubernetes")
SKIP_METHODS = {"OPTIONS"}  # answered by Flask itself, not the view: checked separately below

# Routes that take an argument but are public by design (no owner; anyone may ask).
PUBLIC = {
    "static": "static files: the CSS and JavaScript every visitor loads",
    "customer.order": "the order form of a plan: plans are the public catalog, ordering is its purpose",
    "customer.order_preview": "what the backend makes of typed order params for a public plan; nothing is stored",
    "auth.reset": "a password-reset link: the signed single-use token is the credential (tests/test_accounts.py)",
    "auth.verify_email": "an email-confirmation link: the signed token is the credential (tests/test_accounts.py)",
    "auth.confirm_email_change": "the new address's confirmation link: the signed token is the credential",
}

# Operator-only routes: a customer must get 403/404; the control asks as an operator.
OPERATOR_ONLY = {
    "admin.service": "the operator's service page",
    "admin.retry": "retry a failed operation",
    "admin.mail_retry": "send a mail that was given up again",
    "admin.act": "suspend / unsuspend / terminate by an operator",
    "admin.customer_access": "disable / enable an account",
    "admin.plugin_action": "enable / disable / test a backend plugin",
    "admin.run_action": "a backend's custom action, run by an operator",
    "admin.service_status": "the operator's service page polls it",
    "admin.comp": "make a service complimentary (billing)",
    "admin.retry_billing_task": "retry a failed Stripe call (billing task)",
    "admin.customer_comp": "make an account complimentary or paying again",
    "admin.customer_order": "order for a customer without payment (complimentary or to be invoiced)",
    "admin.invoice_paid": "mark an invoice of our own paid (bank transfer received)",
    "admin.invoice_void": "void an invoice of our own",
    "admin.invoice_pdf": "the operator's download of any invoice's PDF",
    "admin.invoice_account": "an account's invoicing switches (monthly invoice, reminders)",
    "admin.void_usage": "void a billable usage record (a correction record; a Stripe meter event adjustment)",
    "admin.plugin_settings": "a backend plugin's settings form",
    "admin.reconcile_page": "compare a backend's remote objects with the records",
    "admin.reconcile_fix": "fix drift found by reconcile",
    "admin.reconcile_adopt": "adopt remote objects no service accounts for",
    "admin.service_note": "an operator's note on a service",
    "admin.service_change_plan": "an operator changes a service's plan",
    "admin.service_force_terminate": "terminate even when the backend refuses",
    "admin.service_purge": "purge a terminated service's retained data",
    "pterodactyl_admin.save_node": "the Pterodactyl plugin's node settings",
    "pterodactyl_admin.remove_node": "the Pterodactyl plugin's node settings",
}


@dataclass
class World:
    """Objects of every kind owned by customer A, and the people who ask for them."""

    app: object
    router: object
    a: int            # user ids (requests run outside any app context, so nothing is cached on g)
    b: int
    operator: int
    services: dict = field(default_factory=dict)   # status -> A's Service id (+ "paid_active")
    token_id: int = 0
    session_id: int = 0   # A's signed-in browser session (UserSession)
    domain_id: int = 0    # A's hostname verification (DomainVerification)
    task_id: int = 0      # a failed billing task of A's paid service (BillingTask)
    invoice_id: int = 0   # an issued invoice of our own of A's (Invoice)
    mail_id: int = 0      # a mail to A that was given up (OutboundMail, operator-only routes)
    markers: list = field(default_factory=list)    # strings only A's objects contain


# argument name -> the values to probe (A's objects), from the world.
ID_ARGUMENTS = {
    "service_id": lambda w: sorted(w.services.values()),
    "token_id": lambda w: [w.token_id],
    "user_id": lambda w: [w.a],
    "node_id": lambda w: [1],          # a Pterodactyl node id (operator-only routes)
    "name": lambda w: ["memory"],      # a backend plugin name (operator-only routes)
    "session_id": lambda w: [w.session_id],
    "domain_id": lambda w: [w.domain_id],
    "task_id": lambda w: [w.task_id],  # a billing task of A's paid service (operator-only routes)
    "invoice_id": lambda w: [w.invoice_id],  # an invoice of our own of A's
    "mail_id": lambda w: [w.mail_id],  # a mail to A that was given up (operator-only routes)
}

# (endpoint, argument) -> the values to probe, where an argument name means something else there.
ENDPOINT_ARGUMENTS = {
    # a credential and an action of A's live services (the others have none: their owner gets 404 too)
    ("customer.reveal_credential", "name"): lambda w: ["root_password"],
    ("customer.reveal_credential", "service_id"): lambda w: [w.services["active"], w.services["suspended"]],
    ("api.run_action", "name"): lambda w: ["restart"],
    ("api.run_action", "service_id"): lambda w: [w.services["active"], w.services["suspended"]],
}


def _routes():
    """(endpoint, rule, method) of every route with arguments, and the GET routes without any, from
    the real app's URL map (built once at collection, with every plugin and billing)."""
    import tempfile

    from panel import create_app

    old = os.environ.get("PANEL_INSTANCE_PATH")
    with tempfile.TemporaryDirectory(prefix="panel-matrix-") as tmp:
        os.environ["PANEL_INSTANCE_PATH"] = tmp
        try:
            app = create_app(dict(BASE_CONFIG, DATABASE_URL=f"sqlite:///{tmp}/routes.db", PLUGINS=list(PLUGINS),
                                  STRIPE_SECRET_KEY="sk_test_routes", STRIPE_WEBHOOK_SECRET="whsec_routes"))
        finally:
            if old is None:
                os.environ.pop("PANEL_INSTANCE_PATH", None)
            else:
                os.environ["PANEL_INSTANCE_PATH"] = old
    found = []
    for rule in app.url_map.iter_rules():
        if rule.arguments and rule.endpoint not in PUBLIC:
            for method in sorted(rule.methods - SKIP_METHODS):
                found.append((rule.endpoint, rule.rule, method))
    listing = sorted({r.rule for r in app.url_map.iter_rules()
                      if not r.arguments and "GET" in r.methods and r.endpoint not in ("auth.login", "auth.signup")})
    return sorted(found), listing


ROUTES, LISTINGS = _routes()


@pytest.fixture
def dns_server():
    """The loopback DNS stand-in, so a hostname check as A asks 127.0.0.1 and nothing else."""
    from dns_standin import DnsStandIn

    server = DnsStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def world(make_app, stripe_servers, dns_server):
    from billinglib import PRICE_BIG, PRICE_PAID, PUBLIC as PUBLIC_URL, SECRET_KEY, WHSEC

    from panel.billing.models import BillingCustomer, BillingInvoice, BillingTask, StripeEvent, Subscription

    REMOTE.__init__()
    stripe_servers.failures.clear()
    app = make_app(plugins=PLUGINS, STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_WEBHOOK_SECRET=WHSEC,
                   STRIPE_API_BASE=stripe_servers.url, PUBLIC_URL=PUBLIC_URL,
                   DNS_RESOLVERS=f"127.0.0.1:{dns_server.port}")
    with app.app_context():
        a = add_user("alice-owner@example.com")
        b = add_user("bob-other@example.com")
        operator = add_user("ops@example.com", role="operator")
        free = Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128})
        paid = Plan(slug="mem-paid", name="Memory paid", backend="memory", options={"size_mib": 256},
                    stripe_price=PRICE_PAID)
        big = Plan(slug="mem-big", name="Memory big", backend="memory", options={"size_mib": 512},
                   stripe_price=PRICE_BIG)
        db.session.add_all([free, paid, big])
        db.session.commit()
        w = World(app, stripe_servers, a.id, b.id, operator.id)
        now = utcnow()
        kinds = [(status, free if status != "pending_payment" else paid) for status in STATUSES]
        kinds.append(("paid_active", paid))
        for n, (kind, plan) in enumerate(kinds):
            status = "active" if kind == "paid_active" else kind
            marker = f"a-only-{_secrets.token_hex(4)}"
            svc = Service(user=a, plan=plan, backend="memory", status=status, status_detail=f"detail {marker}",
                          params={"name": marker})
            db.session.add(svc)
            db.session.flush()
            w.markers += [marker, svc.external_id]
            if status not in ("pending_payment", "cancelled"):
                svc.resource_id = f"m-{svc.external_id}"
                svc.backend_data = {"host": f"{marker}.test"}
                svc.secrets_encrypted = crypto.encrypt_json({"root_password": "s3cret-root-pw"})
                if status != "terminated":
                    REMOTE.objects[svc.external_id] = {"state": "suspended" if status == "suspended" else "active",
                                                       "size": plan.options["size_mib"]}
                db.session.add(Operation(service=svc, action="provision", state="succeeded", attempts=1,
                                         payload={"prior_status": "pending_payment"}, finished_at=now))
            if status == "failed":
                db.session.add(Operation(service=svc, action="suspend", state="failed", attempts=1,
                                         last_error="memory: suspend timed out", payload={"prior_status": "active"},
                                         finished_at=now))
            db.session.add(ServiceEvent(service=svc, kind="created", actor="test", from_status=None,
                                        to_status=status, detail=f"made for the matrix {marker}"))
            if status in ("active", "suspended"):
                db.session.add_all([UsageSample(service_id=svc.id, at=now - timedelta(minutes=m),
                                                metrics=[{"name": "memory", "value": 10 + m, "unit": "MiB"}])
                                    for m in range(3)])
            w.services[kind] = svc.id
        paid_svc = db.session.get(Service, w.services["paid_active"])
        customer_id = f"cus_{_secrets.token_hex(6)}"
        sub_id = f"sub_{_secrets.token_hex(6)}"
        invoice_id = f"in_{_secrets.token_hex(6)}"
        db.session.add(BillingCustomer(user_id=a.id, stripe_customer_id=customer_id))
        db.session.add(Subscription(service_id=paid_svc.id, user_id=a.id, stripe_customer_id=customer_id,
                                    stripe_subscription_id=sub_id, stripe_price=PRICE_PAID, status="active",
                                    current_period_end=now + timedelta(days=20)))
        db.session.add(Subscription(service_id=w.services["pending_payment"], user_id=a.id,
                                    stripe_customer_id=customer_id, checkout_session_id=f"cs_{_secrets.token_hex(6)}",
                                    stripe_price=PRICE_PAID, status="checkout"))
        db.session.add(BillingInvoice(stripe_invoice_id=invoice_id, user_id=a.id, service_id=paid_svc.id,
                                      stripe_subscription_id=sub_id, number=f"INV-{invoice_id}", status="paid",
                                      currency="usd", amount_due=500, amount_paid=500,
                                      hosted_invoice_url=f"https://invoice.stripe.test/{invoice_id}", created=now))
        db.session.add(StripeEvent(id=f"evt_{_secrets.token_hex(6)}", type="invoice.paid", created=1700000000,
                                   payload={"data": {"object": {"id": invoice_id}}}, processed_at=now,
                                   outcome="recorded"))
        token, _ = ApiToken.issue(a, f"a-token-{_secrets.token_hex(3)}")
        session_row = UserSession(user_id=a.id, token_hash=_secrets.token_hex(32), ip_address="192.0.2.7",
                                  user_agent=f"a-browser-{_secrets.token_hex(3)}")
        domain = DomainVerification(user_id=a.id, hostname=f"a-only-{_secrets.token_hex(4)}.example.org")
        task = BillingTask(service_id=paid_svc.id, kind="add_item", state="failed", actor="test", attempts=1,
                           payload={"subscription": sub_id, "price": PRICE_BIG, "addon": "none"},
                           last_error="stand-in refusal", due_at=None, lease_token=0, lost_runs=0)
        db.session.add_all([session_row, domain, task])
        from datetime import date
        from decimal import Decimal


        from panel.models import Invoice, InvoiceLine

        invoice = Invoice(number=f"2026-{_secrets.randbelow(900000) + 100000}", user_id=a.id,
                          period_start=date(2026, 11, 1), period_end=date(2026, 11, 30), due_on=date(2026, 12, 31),
                          currency="chf", subtotal=4900, vat_rate=Decimal("8.10"), vat=397, total=5297,
                          buyer={"name": f"a-buyer-{_secrets.token_hex(3)}", "email": a.email},
                          seller={"name": "seller"}, payment_reference="RF00", status="issued")
        db.session.add(invoice)
        db.session.add(InvoiceLine(invoice=invoice, position=1, kind="base", description="base", quantity=30,
                                   unit="day", unit_price=Decimal(1), amount=4900))
        mail = OutboundMail(recipients=[a.email], subject="Your service is ready", state="failed", attempts=3,
                            last_error="SMTP: refused", lease_token=0, lost_runs=0)
        db.session.add(mail)
        db.session.commit()
        w.token_id, w.session_id, w.domain_id, w.task_id = token.id, session_row.id, domain.id, task.id
        w.invoice_id, w.mail_id = invoice.id, mail.id
        w.markers += [session_row.user_agent, domain.hostname, invoice.number, invoice.buyer["name"]]
        w.markers += [a.email, customer_id, sub_id, invoice_id, token.prefix, token.name]
    yield w


EMAILS = {"a": "alice-owner@example.com", "b": "bob-other@example.com", "operator": "ops@example.com"}


def client_of(w: World, who: str):
    """A test client logged in (session) as ``who``, and the bearer header of a new token of theirs."""
    from panel.models import User

    client = w.app.test_client()
    login(client, EMAILS[who])
    with w.app.app_context():
        headers = token_for(db.session.get(User, getattr(w, who)))
    w.app.test_client().get("/api/v1/services", headers=headers)  # the token's first use is stamped now
    return client, headers


def settle(w: World) -> None:
    """Wait until the in-process jobs the last requests started are done."""
    from panel import dispatch

    with w.app.app_context():
        assert dispatch.inprocess_runner().wait_idle(30), "jobs did not finish in time"


def snapshot(w: World) -> dict:
    """Every row of every table (``api_tokens.last_used_at`` aside: using a token stamps it), after
    the in-process jobs are done."""
    settle(w)
    rows = {}
    with w.app.app_context():
        for table in db.metadata.sorted_tables:
            columns = [c for c in table.columns if not (table.name == "api_tokens" and c.name == "last_used_at")]
            rows[table.name] = sorted(tuple(str(v) for v in row) for row in
                                      db.session.execute(db.select(*columns)).all())
        db.session.remove()
    return rows


def build_urls(w: World, endpoint: str, rule_text: str) -> list[str]:
    """Every URL of the rule with A's objects filled in (every choice of an ``any(...)`` part)."""
    rule = next(r for r in w.app.url_map.iter_rules() if r.endpoint == endpoint and r.rule == rule_text)
    choices = {}
    for name in sorted(rule.arguments):
        converter = rule._converters[name]
        if hasattr(converter, "items"):  # any(a, b, c)
            choices[name] = sorted(converter.items)
        elif (endpoint, name) in ENDPOINT_ARGUMENTS:
            choices[name] = ENDPOINT_ARGUMENTS[(endpoint, name)](w)
        elif name in ID_ARGUMENTS:
            choices[name] = ID_ARGUMENTS[name](w)
        else:
            pytest.fail(f"{endpoint} takes {name!r}, which the route matrix cannot fill: add it to "
                        "ID_ARGUMENTS (the ids of A's objects of that kind), or list the route in PUBLIC "
                        "or OPERATOR_ONLY with the reason")
    adapter = w.app.url_map.bind("localhost")
    names = sorted(choices)
    return [adapter.build(endpoint, dict(zip(names, combo)), force_external=False)
            for combo in itertools.product(*(choices[n] for n in names))]


def ask(client, method: str, url: str, headers: dict | None = None):
    """One request the way a browser or API client would send it (a form or a JSON body)."""
    if method in ("GET", "HEAD"):
        return client.open(url, method=method, headers=headers or {})
    if url.startswith("/api/"):
        return client.open(url, method=method, headers=headers or {}, json={"plan": "mem-big"})
    return client.open(url, method=method, headers=headers or {},  # the password: a reveal asks for it
                       data={"plan": "mem-big", "next": "service", "region": "x", "password": "password123"})


def verdict(response) -> str:
    """"refused" (403/404), "anonymous" (401, or a redirect to the login page) or "served"."""
    if response.status_code in (403, 404):
        return "refused"
    if response.status_code == 401 or (response.status_code in (301, 302, 303)
                                       and response.headers.get("Location", "").split("?")[0].endswith("/login")):
        return "anonymous"
    return "served"


@pytest.mark.parametrize("endpoint,rule,method", ROUTES, ids=[f"{m} {r}" for _, r, m in ROUTES])
def test_another_customer_gets_404_and_changes_nothing(world, endpoint, rule, method):
    w = world
    urls = build_urls(w, endpoint, rule)
    session_b, token_b = client_of(w, "b")
    before = snapshot(w)
    calls_before = list(REMOTE.calls)
    stripe_writes = [r for r in w.router.requests if r[0] != "GET"]
    for url in urls:
        answers = {}
        for who, client, headers in (("session", session_b, None), ("token", w.app.test_client(), token_b)):
            response = ask(client, method, url, headers)
            answers[who] = verdict(response)
            body = response.get_data(as_text=True)
            assert answers[who] != "served", (
                f"{method} {url} as another customer ({who}) answered {response.status_code}: "
                f"{body[:300]}")
            leaked = [m for m in w.markers if m in body]
            assert not leaked, f"{method} {url} ({who}) showed A's {leaked}"
        assert "refused" in answers.values(), (
            f"{method} {url}: neither B's session nor B's token was refused as B ({answers}); "
            "the ownership check was never reached")
    assert snapshot(w) == before, f"{method} {rule} as another customer changed the database"
    assert REMOTE.calls == calls_before, f"{method} {rule} as another customer called the backend"
    assert [r for r in w.router.requests if r[0] != "GET"] == stripe_writes, (
        f"{method} {rule} as another customer changed something in Stripe")

    # The control: someone who may ask is served, so the ids above were real and the route is alive.
    allowed = "operator" if endpoint in OPERATOR_ONLY else "a"
    session, token = client_of(w, allowed)
    for url in urls:
        answers = {who: verdict(ask(client, method, url, headers)) for who, client, headers in
                   (("session", session, None), ("token", w.app.test_client(), token))}
        settle(w)
        assert "served" in answers.values(), (
            f"{method} {url} was refused to {'an operator' if allowed == 'operator' else 'its owner'} too "
            f"({answers}): if the route is operator-only, list it in OPERATOR_ONLY; else the matrix fills "
            "it with ids that do not exist")


def test_the_matrix_covers_the_routes_that_matter():
    """The generated list includes the routes the issue names (so the generator itself can't rot)."""
    rules = {(rule, method) for _, rule, method in ROUTES}
    for expected in [("/api/v1/services/<int:service_id>/usage", "GET"),
                     ("/api/v1/services/<int:service_id>", "GET"),
                     ("/services/<int:service_id>/cancel", "POST"),
                     ("/billing/services/<int:service_id>/change-plan", "POST"),
                     ("/account/tokens/<int:token_id>/revoke", "POST"),
                     ("/admin/services/<int:service_id>/<any(suspend, unsuspend, terminate):action>", "POST"),
                     ("/admin/pterodactyl/nodes/<int:node_id>", "POST")]:
        assert expected in rules, expected
    assert set(OPERATOR_ONLY) <= {endpoint for endpoint, _, _ in ROUTES}, "a stale OPERATOR_ONLY entry"


def test_options_reveals_nothing_about_the_object(world):
    """OPTIONS is answered by Flask from the rule alone: the same for A's id and for no object."""
    w = world
    client, _ = client_of(w, "b")
    for endpoint, rule, _ in ROUTES:
        if "<int:service_id>" not in rule:
            continue
        urls = build_urls(w, endpoint, rule)
        missing = urls[0].replace(f"/{w.services['active']}", "/999999", 1)
        mine, nobody = client.open(urls[0], method="OPTIONS"), client.open(missing, method="OPTIONS")
        assert (mine.status_code, mine.headers.get("Allow")) == (nobody.status_code, nobody.headers.get("Allow"))
        assert mine.get_data() == nobody.get_data()


@pytest.mark.parametrize("url", LISTINGS)
def test_lists_show_another_customer_nothing(world, url):
    """Pages and API lists without an id (``/services``, ``/billing``, ``/api/v1/services``...)."""
    w = world
    session_b, token_b = client_of(w, "b")
    for who, client, headers in (("session", session_b, None), ("token", w.app.test_client(), token_b)):
        response = client.get(url, headers=headers or {})
        body = response.get_data(as_text=True)
        leaked = [m for m in w.markers if m in body]
        assert not leaked, f"GET {url} ({who}) showed customer B these things of A's: {leaked}"

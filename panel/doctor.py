"""``panel doctor`` and ``/admin/doctor``: every check of a running panel, each problem with its fix.

Seed 001's "Verification queries" and "Common issues & fixes", generalised. Checks, in order:

* ``database``: reachable and at the newest migration (the others need it: they stop here);
* ``plans``: each active plan's backend is installed and enabled, its options still validate, and
  its Stripe price exists, is active and recurring (``panel stripe check``), all prices in one
  currency (a Stripe customer pays every subscription in one currency);
* ``plugins``: every backend in use (enabled, or with plans or live services) has valid settings
  and passes ``test_connection`` (unless a plugin's own checks cover the connection);
* ``<plugin checks>``: what plugins add through the ``doctor_checks`` hook (``Check``), e.g.
  Pterodactyl nodes, eggs and free allocations, the Docker engine, network and PostgreSQL, the
  Kubernetes CRD; they get the backend and the live services as ``ServiceSpec``s (plain values);
* ``services``: live services whose plan is gone, belongs to another backend, or whose backend is
  not installed (seed 001's orphan-order query);
* ``billing``: the webhook secret, the last event received and when, and through Stripe's webhook
  endpoint API (``GET /v1/webhook_endpoints``) an enabled endpoint at ``<PANEL_PUBLIC_URL>/stripe/webhook``
  with every event type we handle;
* ``jobs``: live RQ workers, the queue's depth and oldest job, work overdue past
  ``PANEL_SWEEP_AFTER``, and the periodic loop's heartbeat (written to Redis by ``panel worker``).

A ``Problem`` is an ``error`` (the panel cannot do something it should: ``panel doctor`` exits 1)
or a ``warning`` (worth a look; exit 1 only with ``--strict``).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from flask import current_app

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "panel:periodic-heartbeat"
LIVE = ("provisioning", "active", "suspended", "terminating", "failed", "needs_reconcile")


@dataclass(frozen=True)
class Problem:
    """One thing wrong: ``message`` says what (operators' words, technical detail welcome, never a
    secret), ``fix`` what to do about it (a command, a setting, a page); ``severity`` ``error`` or
    ``warning``."""

    message: str
    fix: str
    severity: str = "error"


@dataclass(frozen=True)
class Check:
    """A check a plugin adds through the ``doctor_checks`` hook.

    ``name`` is shown before its problems (e.g. ``pterodactyl nodes``). ``run`` returns an
    iterable of ``Problem``s (empty: all well) and may raise (reported as a problem of the check).
    With ``backend`` set, the check runs only when that backend is installed, in use and
    configured, and is called ``run(backend, specs)``: the configured ``Backend`` instance and the
    ``ServiceSpec``s of its live services (no secrets); otherwise ``run()``. ``covers_connection``:
    the check tests the backend's connection itself, so the core does not also run its
    ``test_connection`` (no duplicate problem).
    """

    name: str
    run: Callable[..., Iterable[Problem]]
    backend: str | None = None
    covers_connection: bool = False


@dataclass
class Result:
    """What one check found: ``problems``, or a ``note`` of what it saw when all is well;
    ``skipped`` says why it did not run."""

    name: str
    problems: list[Problem] = field(default_factory=list)
    note: str = ""
    skipped: str = ""


@dataclass
class Report:
    """Every check's ``Result``, in order."""

    results: list[Result] = field(default_factory=list)

    @property
    def problems(self) -> list[tuple[str, Problem]]:
        """``(check name, problem)`` of every problem."""
        return [(r.name, p) for r in self.results for p in r.problems]

    @property
    def errors(self) -> int:
        """How many problems are errors."""
        return sum(1 for _, p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> int:
        """How many problems are warnings."""
        return sum(1 for _, p in self.problems if p.severity != "error")

    def lines(self) -> list[str]:
        """The report as printable lines: a summary, then per check its problems (``✗`` error,
        ``!`` warning, each with its fix) or ``✓`` and what it saw (``-`` when skipped)."""
        head = ("panel doctor: no problems" if not self.problems else
                f"panel doctor: {self.errors} error(s), {self.warnings} warning(s)")
        out = [head]
        for r in self.results:
            if r.skipped:
                out.append(f"- {r.name}: skipped ({r.skipped})")
            elif not r.problems:
                out.append(f"✓ {r.name}" + (f": {r.note}" if r.note else ""))
            for p in r.problems:
                out.append(f"{'✗' if p.severity == 'error' else '!'} {r.name}: {p.message}")
                out.append(f"    fix: {p.fix}")
        return out


# --------------------------------------------------------------------------- the checks

def check_database() -> Result:
    """The database answers and is at the newest migration (``panel db upgrade``)."""
    from sqlalchemy import text

    from panel.extensions import db
    from panel.ops import migration_state

    result = Result("database")
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            state = migration_state(conn)
    except Exception as exc:
        result.problems.append(Problem(f"the database cannot be reached ({type(exc).__name__})",
                                       "check PANEL_DATABASE_URL and that the database server runs"))
        return result
    if state != "ok":
        result.problems.append(Problem(f"the schema is not at the newest migration: {state}", "panel db upgrade"))
    else:
        result.note = "reachable, at the newest migration"
    return result


def _installed() -> dict[str, type]:
    from panel.plugins import plugins

    return dict(plugins().backends)


def _configured(name: str):
    """``(backend, "")`` or ``(None, why)``."""
    from panel.plugins import BackendNotConfigured, get_backend

    try:
        return get_backend(name), ""
    except BackendNotConfigured as exc:
        return None, str(exc)


def check_plans() -> Result:
    """Every active plan can be sold: backend installed and enabled, options valid, metered prices
    only for billable metrics the backend declares, Stripe price ok."""
    from panel import billing
    from panel.backends import BackendError, ValidationError, validate_model
    from panel.extensions import db
    from panel.models import Plan
    from panel.plugins import is_enabled

    result = Result("plans")
    plans = db.session.scalars(db.select(Plan).where(Plan.active.is_(True)).order_by(Plan.sort_order, Plan.id)).all()
    installed = _installed()
    for plan in plans:
        cls = installed.get(plan.backend)
        if cls is None:
            result.problems.append(Problem(
                f"plan {plan.slug} uses the backend {plan.backend}, which is not installed (installed: "
                f"{', '.join(sorted(installed)) or 'none'})",
                f"install the plugin that provides {plan.backend} (and check PANEL_PLUGINS), or set the plan "
                "inactive (active: false in the catalog, then panel plans import)"))
            continue
        if not is_enabled(plan.backend):
            result.problems.append(Problem(
                f"plan {plan.slug}: its backend {plan.backend} is disabled, so customers cannot order it",
                f"panel plugins test {plan.backend}, then panel plugins enable {plan.backend} (or Enable in "
                "/admin/plugins)", "warning"))
        from panel.catalog import metered_problems

        for problem in metered_problems(cls, dict(plan.metered or {})):
            result.problems.append(Problem(
                f"plan {plan.slug}: {problem}",
                f"price only the billable metrics {plan.backend} declares (panel plugins list), or remove "
                "the metric from the plan's metered: block, then panel plans import"))
        backend, _why = _configured(plan.backend)
        try:
            if backend is not None:
                backend.validate_plan_options(dict(plan.options or {}))
            else:  # without settings only the schema can be checked
                validate_model(cls.PlanOptions, dict(plan.options or {}))
        except ValidationError as exc:
            result.problems.append(Problem(
                f"plan {plan.slug}: its options no longer validate: {exc}",
                "correct the plan's options in the catalog file and panel plans import it"))
        except BackendError as exc:
            result.problems.append(Problem(f"plan {plan.slug}: its options could not be checked: {exc}",
                                           f"panel plugins test {plan.backend}", "warning"))
    paid = [p for p in plans if not p.is_free]
    if paid and not billing.configured():
        result.problems.append(Problem(
            f"{len(paid)} paid plan(s) cannot be sold because billing is off: {', '.join(p.slug for p in paid)}",
            "set PANEL_STRIPE_SECRET_KEY and PANEL_STRIPE_WEBHOOK_SECRET (or make the plans free)"))
    elif paid:
        result.problems += _price_problems(paid)
    if not result.problems:
        result.note = f"{len(plans)} active plan(s), {len(paid)} paid"
    return result


def _price_problems(paid: list) -> list[Problem]:
    """``panel stripe check``'s problems, plus prices in another currency than most plans'."""
    from collections import Counter

    from panel.billing import stripe_api
    from panel.billing.cli import price_problems
    from panel.billing.stripe_api import BillingAPIError

    fix = ("create (or reactivate) a recurring price in Stripe and give its id as the plan's stripe_price in "
           "the catalog, then panel plans import")
    try:
        found = [Problem(f"plan {item}: Stripe price {price} {problem}", fix) for item, price, problem in price_problems()]
        bad = {p.message.split(":")[0] for p in found}
        client = stripe_api.client()
        currencies: dict[str, str] = {}
        for plan in paid:
            if f"plan {plan.slug}" in bad:
                continue
            price = stripe_api.call("read the price", client.v1.prices.retrieve, plan.stripe_price)
            currencies[plan.slug] = str(price.get("currency") or "").upper()
    except BillingAPIError as exc:
        return [Problem(f"Stripe cannot be asked about the prices: {exc}",
                        "check PANEL_STRIPE_SECRET_KEY (and PANEL_STRIPE_API_BASE) and that Stripe is reachable")]
    if len(set(currencies.values())) > 1:
        usual, _ = Counter(currencies.values()).most_common(1)[0]
        for slug, currency in sorted(currencies.items()):
            if currency != usual:
                found.append(Problem(
                    f"plan {slug}: its Stripe price is in {currency}, the other plans' in {usual} (a Stripe "
                    "customer pays all their subscriptions in one currency)",
                    f"give plan {slug} a price in {usual} (catalog stripe_price, then panel plans import)"))
    return found


def _in_use(name: str) -> bool:
    from panel.extensions import db
    from panel.models import Plan, Service
    from panel.plugins import is_enabled

    if is_enabled(name):
        return True
    if db.session.scalar(db.select(Plan.id).where(Plan.backend == name, Plan.active.is_(True)).limit(1)):
        return True
    return bool(db.session.scalar(db.select(Service.id).where(Service.backend == name,
                                                              Service.status.in_(LIVE)).limit(1)))


def check_plugins(covered: set[str] = frozenset()) -> Result:
    """Each backend in use has valid settings and its ``test_connection`` passes (backends in
    ``covered`` are tested by their own plugin checks)."""
    from panel.backends import BackendError

    result = Result("plugins")
    seen = []
    for name in sorted(_installed()):
        if not _in_use(name):
            continue
        seen.append(name)
        backend, why = _configured(name)
        if backend is None:
            for part in why.split(": ", 1)[-1].split("; "):
                key = part.split(" ", 1)[0]
                result.problems.append(Problem(
                    f"{name} is not configured: {part.split(' (panel plugins set')[0]}",
                    f"set it in /admin/plugins, or panel plugins set {name} {key} VALUE "
                    f"(or PANEL_PLUGIN_{name.upper()}_{key.upper()})"))
            continue
        if name in covered or not backend.supports("test_connection"):
            continue
        try:
            backend.test_connection()
        except BackendError as exc:
            result.problems.append(Problem(f"{name}: the connection test failed: {exc}",
                                           f"correct {name}'s settings in /admin/plugins, then panel plugins test {name}"))
        except Exception as exc:  # a plugin's bug must not stop the doctor
            log.exception("test_connection of %s raised", name)
            result.problems.append(Problem(f"{name}: the connection test raised {type(exc).__name__}",
                                           "see the log; report it to the plugin's authors"))
    if not result.problems:
        result.note = f"in use: {', '.join(seen) or 'none'}"
    return result


def plugin_checks() -> list[Check]:
    """Every ``Check`` the plugins return from the ``doctor_checks`` hook."""
    from panel.plugins import plugins

    out: list[Check] = []
    for batch in plugins().pm.hook.doctor_checks():
        for check in batch or ():
            if isinstance(check, Check):
                out.append(check)
            else:
                log.warning("doctor_checks returned %r, not a panel.doctor.Check; ignored", check)
    return out


def _specs(name: str) -> list:
    from panel import lifecycle
    from panel.extensions import db
    from panel.models import Service

    services = db.session.scalars(db.select(Service).where(Service.backend == name, Service.status.in_(LIVE))
                                  .order_by(Service.id)).all()
    out = []
    for service in services:
        try:
            out.append(dataclasses.replace(lifecycle.spec_for(service), secrets={}))
        except Exception:  # data that no longer decrypts is the services check's business
            continue
    return out


def run_plugin_check(check: Check) -> Result:
    """Run one plugin ``Check`` (skipped, with the reason, when its backend is not usable)."""
    result = Result(check.name)
    try:
        if check.backend:
            if check.backend not in _installed():
                result.skipped = f"{check.backend} is not installed"
                return result
            if not _in_use(check.backend):
                result.skipped = f"{check.backend} is not in use"
                return result
            backend, why = _configured(check.backend)
            if backend is None:
                result.skipped = f"{check.backend} is not configured (see plugins)"
                return result
            problems = check.run(backend, _specs(check.backend))
        else:
            problems = check.run()
        result.problems = list(problems or ())
    except Exception as exc:
        log.info("doctor check %s raised: %s", check.name, exc)
        result.problems = [Problem(f"the check could not run: {exc}", "correct what the message names, then run "
                                                                       "panel doctor again")]
    if not result.problems:
        result.note = "ok"
    return result


def check_services() -> Result:
    """Live services whose plan is gone or belongs to another backend, or whose backend is not
    installed (seed 001's orphan-order query)."""
    from panel.extensions import db
    from panel.models import Plan, Service

    result = Result("services")
    installed = _installed()
    rows = db.session.execute(
        db.select(Service.id, Service.backend, Service.plan_id, Plan.slug, Plan.backend)
        .outerjoin(Plan, Plan.id == Service.plan_id).where(Service.status.in_(LIVE)).order_by(Service.id)).all()
    for sid, backend, plan_id, slug, plan_backend in rows:
        if slug is None:
            result.problems.append(Problem(
                f"service {sid} points at plan id {plan_id}, which no longer exists",
                f"import the plan again (panel plans import), or terminate service {sid} (/admin/services/{sid})"))
        elif plan_backend != backend:
            result.problems.append(Problem(
                f"service {sid} is a {backend} service but its plan {slug} now belongs to {plan_backend}",
                f"give plan {slug} back its backend in the catalog, or move service {sid} to a {backend} plan "
                f"(Change plan on /admin/services/{sid})"))
        if backend not in installed:
            result.problems.append(Problem(
                f"service {sid}: its backend {backend} is not installed, so it cannot be suspended or terminated",
                f"install the plugin that provides {backend} (and check PANEL_PLUGINS)"))
    if not result.problems:
        result.note = f"{len(rows)} live service(s)"
    return result


def webhook_url() -> str:
    """Where Stripe must send events: ``<PANEL_PUBLIC_URL>/stripe/webhook``."""
    return current_app.config["PUBLIC_URL"].rstrip("/") + "/stripe/webhook"


def check_billing() -> Result:
    """The webhook secret, the last event received, and an enabled Stripe webhook endpoint at our
    URL with every event type we handle (Stripe ``GET /v1/webhook_endpoints``, all pages)."""
    from panel import billing

    result = Result("billing")
    if not billing.configured():
        result.skipped = "billing is off (PANEL_STRIPE_SECRET_KEY is not set)"
        return result
    from panel.billing import stripe_api
    from panel.billing.handlers import handled_types
    from panel.billing.models import StripeEvent
    from panel.billing.stripe_api import BillingAPIError
    from panel.extensions import db

    url = webhook_url()
    wanted = handled_types()
    notes = []
    if not str(current_app.config.get("STRIPE_WEBHOOK_SECRET") or "").startswith("whsec_"):
        result.problems.append(Problem("PANEL_STRIPE_WEBHOOK_SECRET is not a webhook signing secret (whsec_...)",
                                       f"copy the signing secret of the endpoint at {url} from Stripe"))
    last = db.session.execute(db.select(StripeEvent.type, StripeEvent.received_at)
                              .order_by(StripeEvent.received_at.desc()).limit(1)).first()
    if last is None:
        result.problems.append(Problem(
            "no Stripe event has arrived yet", "check the endpoint below, then send a test event (stripe trigger "
                                               "checkout.session.completed, or the Dashboard's Send test webhook)",
            "warning"))
    else:
        at = last[1] if last[1].tzinfo else last[1].replace(tzinfo=timezone.utc)
        notes.append(f"last event {last[0]} at {at.strftime('%Y-%m-%d %H:%M')} UTC")
    try:
        endpoints = _webhook_endpoints(stripe_api)
    except BillingAPIError as exc:
        result.problems.append(Problem(f"Stripe's webhook endpoints cannot be read: {exc}",
                                       "check PANEL_STRIPE_SECRET_KEY (a restricted key needs read access to "
                                       "webhook endpoints) and that Stripe is reachable"))
        return result
    ours = [e for e in endpoints if str(e.get("url") or "").rstrip("/") == url]
    create = (f"Stripe Dashboard > Developers > Webhooks > Add endpoint: URL {url}, events "
              f"{', '.join(wanted)} (or stripe listen --forward-to {url} while testing)")
    if not ours:
        others = ", ".join(str(e.get("url")) for e in endpoints[:3])
        result.problems.append(Problem(
            f"no Stripe webhook endpoint points at {url}" + (f" (there are: {others})" if others else ""), create))
        return result
    enabled = [e for e in ours if e.get("status") == "enabled"]
    if not enabled:
        result.problems.append(Problem(f"the Stripe webhook endpoint {ours[0].get('id')} at {url} is disabled",
                                       "enable it in Stripe Dashboard > Developers > Webhooks"))
        return result
    best = max(enabled, key=lambda e: len(set(e.get("enabled_events") or []) & set(wanted)) + 1000 * (
        "*" in (e.get("enabled_events") or [])))
    events = set(best.get("enabled_events") or [])
    missing = [] if "*" in events else [t for t in wanted if t not in events]
    if missing:
        result.problems.append(Problem(
            f"the Stripe webhook endpoint {best.get('id')} at {url} does not send {', '.join(missing)}",
            f"add those events to endpoint {best.get('id')} in Stripe Dashboard > Developers > Webhooks"))
    else:
        notes.insert(0, f"endpoint {best.get('id')} at {url} sends every event we handle")
    result.note = "; ".join(notes)
    return result


def _webhook_endpoints(stripe_api) -> list[dict]:
    """Every webhook endpoint of the account (``GET /v1/webhook_endpoints``, paged with
    ``starting_after``, at most 100 pages)."""
    client = stripe_api.client()
    out: list[dict] = []
    params: dict[str, Any] = {"limit": 100}
    for _ in range(100):
        page = stripe_api.call("list the webhook endpoints", client.v1.webhook_endpoints.list, params=params)
        data = list(page.get("data") or [])
        out += data
        if not page.get("has_more") or not data:
            break
        params = {"limit": 100, "starting_after": data[-1]["id"]}
    return out


def check_jobs() -> Result:
    """Workers, the queue, overdue work and the periodic loop."""
    from panel import dispatch, work
    from panel.extensions import db
    from panel.models.base import utcnow

    result = Result("jobs")
    cfg = current_app.config
    cutoff = utcnow() - timedelta(seconds=cfg["SWEEP_AFTER"])
    for kind in dispatch.registry().kinds.values():
        model = kind.model
        overdue = db.session.scalars(db.select(model).where(work.due(model, cutoff)).order_by(model.due_at)).all()
        if overdue:
            first = overdue[0]
            result.problems.append(Problem(
                f"{model.__tablename__.replace('_', ' ')}: {len(overdue)} overdue by more than {cfg['SWEEP_AFTER']} s "
                f"(PANEL_SWEEP_AFTER), the oldest {first.id} since {_utc(first.due_at):%Y-%m-%d %H:%M} UTC",
                "start panel worker (or check that it reaches Redis and the database), then panel sweep; "
                "/admin/ lists them"))
    db.session.rollback()
    if not cfg.get("REDIS_URL"):
        result.note = "jobs run in-process in the web app (no Redis, no worker needed)"
        return result
    try:
        conn = dispatch.redis_connection()
        conn.ping()
    except Exception as exc:
        result.problems.append(Problem(f"Redis cannot be reached ({type(exc).__name__})",
                                       "check PANEL_REDIS_URL and that redis-server runs"))
        return result
    from rq import Worker
    from rq.job import Job

    queue = dispatch.queue()
    workers = [w for w in Worker.all(connection=conn) if dispatch.QUEUE_NAME in w.queue_names()]
    depth = len(queue)
    if not workers:
        result.problems.append(Problem(
            "no panel worker is running (none is registered in Redis)",
            "start one: panel worker (systemd: systemctl enable --now panel-worker@1)"))
    if depth:
        oldest = None
        for job_id in queue.get_job_ids(0, 1):
            try:
                oldest = Job.fetch(job_id, connection=conn).enqueued_at
            except Exception:
                oldest = None
        if oldest is not None:
            waited = (utcnow() - _utc(oldest)).total_seconds()
            if waited > cfg["SWEEP_AFTER"]:
                result.problems.append(Problem(
                    f"the queue holds {depth} job(s), the oldest waiting {int(waited)} s: the workers do not keep up",
                    "start more panel worker processes (or find what blocks them in their logs)"))
    beat = conn.get(HEARTBEAT_KEY)
    limit = 3 * max(float(cfg["SWEEP_INTERVAL"]), 5.0) + 30
    if beat is None:
        result.problems.append(Problem(
            "the periodic loop (sweep, billing cron, usage, retention purges) is not running: no heartbeat",
            "start panel worker without --sweep-interval 0 (one worker runs the loop at a time)"))
    else:
        age = time.time() - float(beat)
        if age > limit:
            result.problems.append(Problem(f"the periodic loop last ran {int(age)} s ago",
                                           "check the panel worker processes and their logs"))
    if not result.problems:
        result.note = f"{len(workers)} worker(s), {depth} job(s) queued, periodic loop alive"
    return result


def check_mail() -> Result:
    """Outgoing email: configured, and none given up (``OutboundMail`` rows in state ``failed``)."""
    from panel import notify
    from panel.extensions import db
    from panel.models import OutboundMail

    result = Result("mail")
    if not notify.enabled():
        result.note = "not configured (PANEL_MAIL_SERVER): customers and operators get no email"
        return result
    failed = db.session.scalar(db.select(db.func.count()).select_from(OutboundMail)
                               .where(OutboundMail.state == "failed"))
    if failed:
        last = db.session.scalars(db.select(OutboundMail).where(OutboundMail.state == "failed")
                                  .order_by(OutboundMail.id.desc()).limit(1)).first()
        result.problems.append(Problem(
            f"{failed} email(s) given up after PANEL_MAIL_BACKOFF; the last (#{last.id}): {last.last_error}",
            "check PANEL_MAIL_SERVER/PORT/USERNAME/PASSWORD and that the SMTP server takes mail, then retry them "
            "on /admin/mail"))
    else:
        result.note = f"SMTP {current_app.config.get('MAIL_SERVER')}:{current_app.config.get('MAIL_PORT')}, nothing given up"
    db.session.rollback()
    return result


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def heartbeat() -> None:
    """A periodic task of ``panel worker``: note in Redis that the periodic loop runs (read by the
    ``jobs`` check). Without Redis it does nothing."""
    from panel import dispatch

    conn = dispatch.redis_connection()
    if conn is not None:
        conn.set(HEARTBEAT_KEY, str(time.time()), ex=3600)


def init_app(app) -> None:
    """Register the heartbeat with the periodic loop (every ``PANEL_SWEEP_INTERVAL`` seconds)."""
    from panel import dispatch

    dispatch.register_periodic(app, "heartbeat", app.config["SWEEP_INTERVAL"], heartbeat)


def run() -> Report:
    """Run every check (``database`` first: when it fails nothing else can run)."""
    report = Report([check_database()])
    if report.results[0].problems:
        return report
    extra = plugin_checks()
    covered = {c.backend for c in extra if c.backend and c.covers_connection}
    report.results += [check_plans(), check_plugins(covered)]
    report.results += [run_plugin_check(c) for c in extra]
    report.results += [check_services(), check_billing(), check_jobs(), check_mail()]
    from panel.extensions import db

    db.session.rollback()
    return report

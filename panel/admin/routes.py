"""Operator routes (role ``operator`` only; others get 404)."""
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from panel import audit, dispatch, lifecycle, views, work
from panel.admin import bp
from panel.backends import BackendError
from panel.customer.forms import ActionForm
from panel.extensions import db
from panel.models import Operation, Plan, Service
from panel.models.base import utcnow
from panel.models.services import STATUSES
from panel.plugins import get_backend, is_enabled, plugins, set_enabled
from panel.security import accepts_files, safe_next


def operator_required(view):
    """Decorator: the view needs a logged-in operator; anyone else gets 404 (the console's existence is
    not revealed).
    """
    @wraps(view)
    @login_required
    def wrapper(*args, **kwargs):
        if not current_user.is_operator:
            abort(404)
        return view(*args, **kwargs)

    return wrapper


def _actor() -> str:
    return f"operator:{current_user.email}"


PAGE_SIZE = 50


@dataclass
class Page:
    """One page of a list newest first: ``rows``, and the ids to page from: ``older`` (the
    ``before`` of the next page, ``None`` on the last) and ``newer`` (the ``after`` of the page
    before, ``None`` on the first)."""

    rows: list
    older: int | None
    newer: int | None


def keyset_page(query, id_column, *, before: int | None = None, after: int | None = None,
                size: int = PAGE_SIZE) -> Page:
    """Keyset paging over ``query`` by ``id_column``, newest first: ``before`` an id gives the
    page of older rows, ``after`` an id the page of newer ones. One indexed range scan of at most
    ``size + 1`` rows whatever the table's size (no ``OFFSET``, no count)."""
    if after is not None:
        rows = db.session.scalars(query.where(id_column > after).order_by(id_column.asc())
                                  .limit(size + 1)).unique().all()
        more = len(rows) > size
        rows = list(reversed(rows[:size]))
        return Page(rows, rows[-1].id if rows else None, rows[0].id if more and rows else None)
    if before is not None:
        query = query.where(id_column < before)
    rows = db.session.scalars(query.order_by(id_column.desc()).limit(size + 1)).unique().all()
    more = len(rows) > size
    rows = rows[:size]
    return Page(rows, rows[-1].id if more and rows else None, rows[0].id if before is not None and rows else None)


def _page_args() -> tuple[int | None, int | None]:
    return request.args.get("before", type=int), request.args.get("after", type=int)


SEARCH_COLLECT = 2000  # matches per index that service_search collects by id before leaving it to the planner
SEARCH_CUSTOMERS = 200  # customers whose email matches, above which their services are left to the planner


def service_search(query, text: str):
    """Narrow a ``Service`` query by what an operator typed: ``123`` or ``#123`` (the service
    number), ``hp-...`` (our external id) or a remote id find that service; anything else is a
    prefix of the service's name, its hostname or its customer's email (each an index lookup).

    For a prefix, one statement first collects the matching ids from each index on its own (name,
    hostname, remote id, and the services of the customers whose email matches), at most
    ``SEARCH_COLLECT`` + 1 per index and ``SEARCH_CUSTOMERS`` customers; the ids of the indexes
    within those bounds become ``id IN (...)``, which the list then orders and pages by the primary
    key (bounded work whatever the table's size). Without it, PostgreSQL answers ``... OR ... ORDER
    BY id DESC LIMIT 51`` by walking the primary key backwards and filtering, which for a few old
    matches reads every newer service (issue 14: 3.08 x at 100k services). An index with more
    matches than that keeps its plain condition: its matches are many, so the backward walk soon
    finds a page of them.
    """
    from panel.models import User

    text = text.strip()[:255]
    number = text[1:] if text.startswith("#") else text
    if number.isdigit() and len(number) < 18:
        return query.where(db.or_(Service.id == int(number), Service.resource_id == number))
    if text.startswith("hp-"):
        return query.where(Service.external_id == text)
    emails = db.select(User.id).where(like_prefix(User.email, text.lower()))
    # the email index gives customers, not services: with more than SEARCH_CUSTOMERS of them the
    # branch is wide at once (a scalar subquery of at most SEARCH_CUSTOMERS + 1 index entries)
    many_customers = (db.select(db.func.count()).select_from(emails.limit(SEARCH_CUSTOMERS + 1).subquery())
                      .scalar_subquery() > SEARCH_CUSTOMERS)
    branches = {"name": like_prefix(Service.display_name, text), "hostname": like_prefix(Service.hostname, text.lower()),
                "email": Service.user_id.in_(emails), "remote id": Service.resource_id == text}
    collect = {**branches, "email": db.and_(Service.user_id.in_(emails.limit(SEARCH_CUSTOMERS + 1)),
                                            db.not_(many_customers))}
    parts = [db.select(db.literal(key).label("branch"), sub.c.id).select_from(sub)
             for key, where in collect.items()
             for sub in [db.select(Service.id).where(where).limit(SEARCH_COLLECT + 1).subquery(key)]]
    parts.append(db.select(db.literal("email").label("branch"), db.literal(None, db.Integer).label("id"))
                 .where(many_customers))
    found: dict[str, list[int]] = {key: [] for key in branches}
    for branch, service_id in db.session.execute(db.union_all(*parts)):
        found[branch].append(service_id)
    ids = sorted({i for key, got in found.items() if len(got) <= SEARCH_COLLECT and None not in got for i in got})
    wide = [branches[key] for key, got in found.items() if len(got) > SEARCH_COLLECT or None in got]
    return query.where(db.or_(Service.id.in_(ids), *wide))


def like_prefix(column, text: str):
    """``column LIKE '<text>%'`` with ``%``, ``_`` and ``\\`` in ``text`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%", escape="\\")


@bp.route("/")
@operator_required
def services():
    """GET /admin/: every service, newest first, 50 a page (keyset: ``before``/``after`` an id),
    filtered by ``status``, ``backend``, ``customer`` (a user id) and ``q`` (``service_search``),
    with counts per status (``service_counts``), the services that need reconciling and the
    work no worker is taking. A fixed number of SQL statements whatever the number of services.
    """
    from sqlalchemy.orm import joinedload, selectinload

    from panel import counts
    from panel.models import User

    status = request.args.get("status") or ""
    backend = request.args.get("backend") or ""
    q = (request.args.get("q") or "").strip()
    customer_id = request.args.get("customer", type=int)
    query = db.select(Service).options(joinedload(Service.user, innerjoin=True), joinedload(Service.plan, innerjoin=True),
                                       selectinload(Service.operations))
    if status:
        query = query.where(Service.status == status)
    if backend:
        query = query.where(Service.backend == backend)
    if customer_id:
        query = query.where(Service.user_id == customer_id)
    if q:
        query = service_search(query, q)
    before, after = _page_args()
    page = keyset_page(query, Service.id, before=before, after=after)
    customer = db.session.get(User, customer_id) if customer_id else None
    cutoff = utcnow() - timedelta(seconds=current_app.config["SWEEP_AFTER"])
    overdue = db.session.scalars(db.select(Operation).where(work.due(Operation, cutoff))
                                 .order_by(Operation.due_at).limit(200)).all()
    reconcile = db.session.scalars(db.select(Service).where(Service.status == "needs_reconcile")
                                   .options(joinedload(Service.user, innerjoin=True), selectinload(Service.operations))
                                   .order_by(Service.id).limit(200)).unique().all()
    events = _event_problems(cutoff)
    backends = sorted(plugins().backends)
    filters = {k: v for k, v in (("status", status), ("backend", backend), ("q", q),
                                 ("customer", customer_id)) if v}
    return render_template("admin/services.html", services=page.rows, page=page, filters=filters,
                           counts=counts.by_status(backend or None), statuses=STATUSES, backends=backends,
                           status=status, backend=backend, q=q, customer=customer, overdue=overdue,
                           all_customers={k: v for k, v in filters.items() if k != "customer"},
                           reconcile=reconcile, event_problems=events, form=ActionForm())


def _event_problems(cutoff) -> list:
    """Stored Stripe events that were given up (``error`` says why) or are overdue (no worker took
    them), for the operator's console; ``[]`` without billing."""
    from panel import billing

    if not billing.configured():
        return []
    from panel.billing.models import StripeEvent

    given_up = db.and_(StripeEvent.processed_at.is_(None), StripeEvent.due_at.is_(None))
    return db.session.scalars(db.select(StripeEvent).where(db.or_(given_up, work.due(StripeEvent, cutoff)))
                              .order_by(StripeEvent.received_at).limit(200)).all()


@bp.route("/services/<int:service_id>")
@operator_required
def service(service_id):
    """GET /admin/services/<id>: one service with its params, details, usage, operations and event log.
    """
    from panel import client_area, messages

    svc = views.load_service(service_id) or abort(404)
    found = client_area.sections(svc)
    return render_template("admin/service.html", service=svc, data=views.service_json(svc),
                           events=list(reversed(svc.events)), form=ActionForm(),
                           actions=client_area.actions(svc), running=client_area.running_action(svc),
                           sections_error=found.get("error"), customer_status=messages.customer_status(svc),
                           suspension=messages.suspension(svc) if svc.status == "suspended" else None)


@bp.route("/services/<int:service_id>/status.json")
@operator_required
def service_status(service_id):
    """Polled by the operator's service page: status, the backend's status detail and the current
    operation, so it updates without reloading."""
    from flask import jsonify

    svc = views.load_service(service_id) or abort(404)
    return jsonify(views.service_json(svc, live=False))


@bp.route("/services/<int:service_id>/actions/<name>", methods=["POST"])
@operator_required
def run_action(service_id, name):
    """POST /admin/services/<id>/actions/<name>: an operator runs one of the backend's actions (the
    same buttons the customer has); recorded with the operator as actor."""
    from panel.customer.routes import start_action

    svc = db.session.get(Service, service_id) or abort(404)
    return start_action(svc, name, url_for("admin.service", service_id=svc.id))


@bp.route("/services/<int:service_id>/retry", methods=["POST"])
@operator_required
def retry(service_id):
    """POST /admin/services/<id>/retry: re-run the failed operation of a failed service
    (``lifecycle.retry``).
    """
    svc = db.session.get(Service, service_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    before = {"status": svc.status}
    try:
        op = lifecycle.retry(svc, actor=_actor())
        audit.record(current_user, "service.retry", svc, before=before,
                     after={"status": svc.status, "operation": op.id, "action": op.action})
        audit.commit()
        flash(f"Retrying {op.action}.", "success")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    return redirect(safe_next(request.form.get("next")) or url_for("admin.service", service_id=svc.id))


@bp.route("/services/<int:service_id>/<any(suspend, unsuspend, terminate):action>", methods=["POST"])
@operator_required
def act(service_id, action):
    """POST /admin/services/<id>/<suspend|unsuspend|terminate>: request that action. A suspension
    takes the operator's free-text ``note`` (the reason the customer is shown); it is not lifted by
    billing.
    """
    svc = db.session.get(Service, service_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    note = (request.form.get("note") or "").strip()[:500]
    payload = {"reason": "operator", "note": note} if action == "suspend" else None
    before = {"status": svc.status}
    try:
        if action == "terminate":
            from panel.billing.changes import terminate

            refund = request.form.get("refund") or None
            if refund not in (None, *REFUNDS):
                abort(400)
            at_period_end = request.form.get("when") == "period_end"
            message = terminate(svc, actor=_actor(), refund=refund, at_period_end=at_period_end,
                                detail="terminate by operator")
            audit.record(current_user, "service.terminate", svc, before=before,
                         after={"status": svc.status, "refund": refund or "as configured",
                                "when": "period_end" if at_period_end else "now"})
            audit.commit()
            flash(message, "success")
        else:
            lifecycle.request(svc, action, actor=_actor(),
                              detail=f"{action} by operator" + (f": {note}" if note and action == "suspend" else ""),
                              payload=payload)
            audit.record(current_user, f"service.{action}", svc, before=before,
                         after={"status": svc.status, **({"reason": note} if note else {})})
            audit.commit()
            flash(f"{action.capitalize()} requested.", "success")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    return redirect(url_for("admin.service", service_id=svc.id))


# refunds an operator may choose when ending a paid service (panel.billing.tasks): none, the unused
# time as Stripe credit, the unused time refunded, or the whole last payment refunded
REFUNDS = ("none", "credit", "refund", "full")


@bp.route("/services/<int:service_id>/comp", methods=["POST"])
@operator_required
def comp(service_id):
    """POST /admin/services/<id>/comp: make a paid service complimentary (its subscription, if any,
    is cancelled now with the ``refund`` chosen; seed 003's plankowner)."""
    from panel.billing.changes import ChangeError, comp_service

    svc = db.session.get(Service, service_id) or abort(404)
    refund = request.form.get("refund") or "none"
    if not ActionForm().validate_on_submit() or refund not in REFUNDS:
        abort(400)
    before = {"billing_mode": svc.billing_mode}
    note = (request.form.get("note") or "")[:500]
    try:
        message = comp_service(svc, actor=_actor(), refund=refund, note=note)
    except ChangeError as exc:
        flash(str(exc), "error")
    else:
        audit.record(current_user, "service.comp", svc, before=before,
                     after={"billing_mode": svc.billing_mode, "refund": refund, **({"note": note} if note else {})})
        audit.commit()
        flash(message, "success")
    return redirect(url_for("admin.service", service_id=svc.id))


@bp.route("/billing-tasks/<int:task_id>/retry", methods=["POST"])
@operator_required
def retry_billing_task(task_id):
    """POST: run a failed billing task again (its idempotency keys make a repeat harmless)."""
    from panel.billing import tasks
    from panel.billing.models import BillingTask

    task = db.session.get(BillingTask, task_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        tasks.retry(task, actor=_actor())
        audit.record(current_user, "billing_task.retry", ("billing_task", task.id), before={"state": "failed"},
                     after={"kind": task.kind, "service": task.service_id})
        audit.commit()
        flash(f"Billing task {task.id} retried.", "success")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    return redirect(url_for("admin.service", service_id=task.service_id) if task.service_id
                    else url_for("admin.services"))


@bp.route("/plans", methods=["GET", "POST"])
@operator_required
@accepts_files("catalog")
def plans():
    """GET/POST /admin/plans: the plan list and a catalog upload (the same all-or-nothing upsert as
    ``panel plans import``).
    """
    from panel.admin.forms import CatalogImportForm
    form = CatalogImportForm()
    errors: list[str] = []
    if form.validate_on_submit():
        from panel.catalog import CatalogError, import_catalog

        raw = form.catalog.data.read(1_000_001)
        if len(raw) > 1_000_000:
            form.catalog.errors.append("The file is larger than 1 MB.")
        else:
            try:
                report = import_catalog(raw.decode("utf-8", errors="replace"))
            except CatalogError as exc:
                errors = exc.errors
            else:
                audit.record_catalog_import(current_user, report, source=form.catalog.data.filename or "upload")
                for line in report.warnings:
                    flash(line, "info")
                flash(f"Imported: {len(report.created)} created, {len(report.updated)} updated, "
                      f"{len(report.unchanged)} unchanged.", "success")
                return redirect(url_for("admin.plans"))
    from panel import counts as service_counts

    rows = db.session.scalars(db.select(Plan).order_by(Plan.sort_order, Plan.id)).all()
    return render_template("admin/plans.html", plans=rows, counts=service_counts.live_by_plan(), form=form,
                           errors=errors)


@bp.route("/customers")
@operator_required
def customers():
    """GET /admin/customers: every account newest first, 50 a page (keyset: ``before``/``after``
    an id), ``q`` a prefix of the email, with each shown account's live-service count (counted
    for the accounts on the page only)."""
    from panel.models import User

    q = (request.args.get("q") or "").strip().lower()[:254]
    query = db.select(User)
    if q:
        query = query.where(like_prefix(User.email, q))
    before, after = _page_args()
    page = keyset_page(query, User.id, before=before, after=after)
    counts = {}
    if page.rows:
        counts = dict(db.session.execute(db.select(Service.user_id, db.func.count())
                                         .where(Service.user_id.in_([u.id for u in page.rows]),
                                                Service.status.not_in(("terminated", "cancelled")))
                                         .group_by(Service.user_id)).all())
    from panel.billing.models import AccountBilling

    comped = set()
    if page.rows:
        comped = set(db.session.scalars(db.select(AccountBilling.user_id).where(
            AccountBilling.user_id.in_([u.id for u in page.rows]), AccountBilling.complimentary.is_(True))))
    return render_template("admin/customers.html", users=page.rows, page=page, counts=counts, comped=comped, q=q,
                           filters={"q": q} if q else {}, form=ActionForm())


@bp.route("/customers/<int:user_id>/<any(disable, enable):action>", methods=["POST"])
@operator_required
def customer_access(user_id, action):
    """POST: disable an account (no login, its API tokens answer 403) or enable it again.
    Its services keep running: suspend them separately if that is wanted."""
    from panel.models import User

    if not ActionForm().validate_on_submit():
        abort(400)
    user = db.session.get(User, user_id) or abort(404)
    if user.id == current_user.id:
        flash("You cannot disable your own account.", "error")
    else:
        before = {"active": user.is_active_flag}
        user.is_active_flag = action == "enable"
        ended = 0
        if action == "disable":
            from panel.auth.sessions import revoke_all

            ended = revoke_all(user)  # a disabled account is logged out everywhere
        audit.record(current_user, f"user.{action}", user, before=before, after={"active": user.is_active_flag},
                     detail=f"{ended} session(s) ended" if ended else "")
        db.session.commit()
        flash(f"{user.email} {action}d.", "success")
    return redirect(url_for("admin.customers"))


@bp.route("/customers/<int:user_id>/comp", methods=["POST"])
@operator_required
def customer_comp(user_id):
    """POST: make an account complimentary (``on=1``; its future paid orders need no payment, and with
    ``services=1`` its running paid services become complimentary) or paying again (``on=0``)."""
    from panel.billing.changes import set_account_complimentary
    from panel.models import User

    if not ActionForm().validate_on_submit():
        abort(400)
    user = db.session.get(User, user_id) or abort(404)
    on = request.form.get("on") == "1"
    message = set_account_complimentary(user, on, actor=_actor(), note=(request.form.get("note") or "")[:500],
                                        comp_services=request.form.get("services") == "1")
    audit.record(current_user, "user.comp" if on else "user.uncomp", user,
                 after={"complimentary": on, "services": request.form.get("services") == "1"})
    audit.commit()
    flash(message, "success")
    return redirect(url_for("admin.customers"))


@bp.route("/customers/<int:user_id>/order", methods=["GET", "POST"])
@operator_required
def customer_order(user_id):
    """GET/POST /admin/customers/<id>/order: order a plan for a customer without payment, as
    ``complimentary`` or ``invoice`` (to be invoiced), with a term, add-ons and the order params
    (a JSON object)."""
    import json

    from panel.models import User
    from panel.orders import OrderError, orderable_plans, place_order

    user = db.session.get(User, user_id) or abort(404)
    form = ActionForm()
    errors: dict[str, str] = {}
    values = {"plan": request.form.get("plan", ""), "term": request.form.get("term", ""),
              "mode": request.form.get("mode", "complimentary"), "params": request.form.get("params", "{}"),
              "addons": [a.strip() for raw in request.form.getlist("addons") for a in raw.split(",") if a.strip()]}
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        try:
            params = json.loads(values["params"] or "{}")
        except ValueError:
            params = None
        if not isinstance(params, dict):
            errors["params"] = 'must be a JSON object, e.g. {"name": "web1"}'
        elif values["mode"] not in ("complimentary", "invoice"):
            errors["mode"] = "choose complimentary or to be invoiced"
        else:
            try:
                plan_is_free = (Plan.by_slug(values["plan"]) or Plan(prices={})).is_free
                result = place_order(user, values["plan"], params, actor=_actor(), term=values["term"] or None,
                                     addons=values["addons"], billing_mode=None if plan_is_free else values["mode"])
            except OrderError as exc:
                errors = {k: v for k, v in exc.fields.items()} or {"plan": exc.message}
                if exc.fields and not set(exc.fields) & {"plan", "term", "addons"}:
                    errors.setdefault("params", "; ".join(f"{k}: {v}" for k, v in exc.fields.items()))
            else:
                audit.record(current_user, "service.order_for", result.service,
                             after={"customer": user.email, "plan": result.service.plan.slug,
                                    "billing_mode": result.service.billing_mode, "term": result.service.term,
                                    "addons": values["addons"]})
                audit.commit()
                flash(f"Ordered {result.service.plan.name} for {user.email} ({result.service.billing_mode}).", "success")
                return redirect(url_for("admin.service", service_id=result.service.id))
    return render_template("admin/order.html", user=user, plans=orderable_plans(), form=form, errors=errors,
                           values=values)


@bp.route("/operations")
@operator_required
def operations():
    """GET /admin/operations: every operation (job), newest first, 50 a page (keyset:
    ``before``/``after`` an id), filtered by ``state`` (index ``(state, id)``)."""
    state = request.args.get("state") or ""
    query = db.select(Operation)
    if state:
        query = query.where(Operation.state == state)
    before, after = _page_args()
    page = keyset_page(query, Operation.id, before=before, after=after)
    return render_template("admin/operations.html", operations=page.rows, page=page, state=state,
                           filters={"state": state} if state else {})


@bp.route("/mail")
@operator_required
def mail():
    """GET /admin/mail: outgoing email, newest first, 50 a page (keyset on the id), filtered by
    ``state`` (``queued``, ``running``, ``sent``, ``failed``; default: everything not sent), with
    the SMTP error of the last try and a retry button for mail that was given up."""
    from panel.models import OutboundMail

    state = request.args.get("state") or ""
    query = db.select(OutboundMail)
    if state == "all":
        pass
    elif state:
        query = query.where(OutboundMail.state == state)
    else:
        query = query.where(OutboundMail.state != "sent")
    before, after = _page_args()
    page = keyset_page(query, OutboundMail.id, before=before, after=after)
    return render_template("admin/mail.html", mails=page.rows, page=page, state=state,
                           filters={"state": state} if state else {}, form=ActionForm())


@bp.route("/mail/<int:mail_id>/retry", methods=["POST"])
@operator_required
def mail_retry(mail_id):
    """POST /admin/mail/<id>/retry: send a mail that was given up again (a fresh set of tries), audited."""
    from panel import notify
    from panel.models import OutboundMail

    if not ActionForm().validate_on_submit():
        abort(400)
    row = db.session.get(OutboundMail, mail_id) or abort(404)
    if row.state != "failed":
        flash(f"Mail #{row.id} is {row.state}: only mail that was given up can be retried.", "error")
        return redirect(url_for("admin.mail"))
    audit.record(current_user, "mail.retry", None, after={"mail": row.id, "last_error": row.last_error})
    notify.retry(row, actor=current_user.email)
    audit.commit()
    flash(f"Mail #{row.id} will be sent again.", "success")
    return redirect(url_for("admin.mail"))


@bp.route("/sweep", methods=["POST"])
@operator_required
def sweep():
    """POST /admin/sweep: run the sweep now (hand over work that is due or whose worker died)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    done = dispatch.sweep()
    audit.record(current_user, "jobs.sweep", None, after={"handed_over": done})
    audit.commit()
    flash(f"The sweep handed over {len(done)} item(s).", "success")
    return redirect(url_for("admin.services"))


@bp.route("/plugins")
@operator_required
def plugin_list():
    """GET /admin/plugins: each backend, enabled or not, its settings form (secrets write-only),
    test connection, enable/disable and its plans (``panel.admin.console.render_plugins``)."""
    from panel.admin.console import render_plugins

    return render_plugins()


@bp.route("/plugins/<name>/<any(enable, disable, test):action>", methods=["POST"])
@operator_required
def plugin_action(name, action):
    """POST /admin/plugins/<name>/<enable|disable|test>: toggle new orders, or check the settings
    against the remote.
    """
    if name not in plugins().backends or not ActionForm().validate_on_submit():
        abort(404)
    if action == "test":
        try:
            flash(f"{name}: {get_backend(name).test_connection()}", "success")
        except BackendError as exc:
            flash(f"{name}: {exc}", "error")
    else:
        before = {"enabled": is_enabled(name)}
        set_enabled(name, action == "enable")
        audit.record(current_user, f"plugin.{action}", ("plugin", name), before=before,
                     after={"enabled": action == "enable"})
        audit.commit()
        flash(f"{name} {action}d.", "success")
    return redirect(url_for("admin.plugin_list") + f"#plugin-{name}")


@bp.route("/audit")
@operator_required
def audit_log():
    """GET /admin/audit: the audit log, newest first, filtered by ``actor`` (substring), ``action``
    (prefix, e.g. ``service.``), ``target`` (``type`` or ``type:id``); 200 rows a page (``before``:
    an entry id to page back from)."""
    from panel.models import AuditEntry

    query = db.select(AuditEntry).order_by(AuditEntry.id.desc())
    actor = (request.args.get("actor") or "").strip()
    action = (request.args.get("action") or "").strip()
    target = (request.args.get("target") or "").strip()
    if actor:
        query = query.where(AuditEntry.actor.contains(actor, autoescape=True))
    if action:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    if target:
        kind, _, ident = target.partition(":")
        query = query.where(AuditEntry.target_type == kind)
        if ident:
            query = query.where(AuditEntry.target_id == ident)
    before = request.args.get("before", type=int)
    if before:
        query = query.where(AuditEntry.id < before)
    rows = db.session.scalars(query.limit(200)).all()
    actions = db.session.scalars(db.select(AuditEntry.action).distinct().order_by(AuditEntry.action)).all()
    return render_template("admin/audit.html", entries=rows, actions=actions, actor=actor, action=action,
                           target=target, more=len(rows) == 200)

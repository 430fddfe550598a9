"""Operator routes (role ``operator`` only; others get 404)."""
from datetime import timedelta
from functools import wraps

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from panel import dispatch, lifecycle, views, work
from panel.admin import bp
from panel.backends import MASK, BackendError
from panel.customer.forms import ActionForm
from panel.extensions import db
from panel.models import Operation, Plan, Service
from panel.models.base import utcnow
from panel.models.services import STATUSES
from panel.plugins import get_backend, is_enabled, plugins, raw_settings, set_enabled


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


@bp.route("/")
@operator_required
def services():
    """GET /admin/: every service, filtered by ``status`` and ``backend`` query args, with counts per
    status and the unfinished operations older than the sweep window.
    """
    status = request.args.get("status") or ""
    backend = request.args.get("backend") or ""
    query = db.select(Service).order_by(Service.id.desc())
    if status:
        query = query.where(Service.status == status)
    if backend:
        query = query.where(Service.backend == backend)
    rows = db.session.scalars(query.limit(500)).all()
    counts = dict(db.session.execute(db.select(Service.status, db.func.count()).group_by(Service.status)).all())
    cutoff = utcnow() - timedelta(seconds=current_app.config["SWEEP_AFTER"])
    overdue = db.session.scalars(db.select(Operation).where(work.due(Operation, cutoff))
                                 .order_by(Operation.due_at).limit(200)).all()
    reconcile = db.session.scalars(db.select(Service).where(Service.status == "needs_reconcile")
                                   .order_by(Service.id).limit(200)).all()
    events = _event_problems(cutoff)
    backends = sorted(plugins().backends)
    return render_template("admin/services.html", services=rows, counts=counts, statuses=STATUSES,
                           backends=backends, status=status, backend=backend, overdue=overdue,
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
    svc = db.session.get(Service, service_id) or abort(404)
    return render_template("admin/service.html", service=svc, data=views.service_json(svc),
                           events=list(reversed(svc.events)), form=ActionForm())


@bp.route("/services/<int:service_id>/retry", methods=["POST"])
@operator_required
def retry(service_id):
    """POST /admin/services/<id>/retry: re-run the failed operation of a failed service
    (``lifecycle.retry``).
    """
    svc = db.session.get(Service, service_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        op = lifecycle.retry(svc, actor=_actor())
        flash(f"Retrying {op.action}.", "success")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    return redirect(request.form.get("next") or url_for("admin.service", service_id=svc.id))


@bp.route("/services/<int:service_id>/<any(suspend, unsuspend, terminate):action>", methods=["POST"])
@operator_required
def act(service_id, action):
    """POST /admin/services/<id>/<suspend|unsuspend|terminate>: request that action (an operator
    suspension is not lifted by billing).
    """
    svc = db.session.get(Service, service_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        lifecycle.request(svc, action, actor=_actor(), detail=f"{action} by operator",
                          payload={"reason": "operator"} if action == "suspend" else None)
        flash(f"{action.capitalize()} requested.", "success")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    return redirect(url_for("admin.service", service_id=svc.id))


@bp.route("/plans", methods=["GET", "POST"])
@operator_required
def plans():
    """GET/POST /admin/plans: the plan list and a catalog upload (the same all-or-nothing upsert as
    ``panel plans import``).
    """
    from panel.admin.forms import CatalogImportForm
    from panel.catalog import CatalogError, import_catalog

    form = CatalogImportForm()
    errors: list[str] = []
    if form.validate_on_submit():
        raw = form.catalog.data.read(1_000_001)
        if len(raw) > 1_000_000:
            form.catalog.errors.append("The file is larger than 1 MB.")
        else:
            try:
                report = import_catalog(raw.decode("utf-8", errors="replace"))
            except CatalogError as exc:
                errors = exc.errors
            else:
                for line in report.warnings:
                    flash(line, "info")
                flash(f"Imported: {len(report.created)} created, {len(report.updated)} updated, "
                      f"{len(report.unchanged)} unchanged.", "success")
                return redirect(url_for("admin.plans"))
    rows = db.session.scalars(db.select(Plan).order_by(Plan.sort_order, Plan.id)).all()
    counts = dict(db.session.execute(db.select(Service.plan_id, db.func.count())
                                     .where(Service.status.not_in(("terminated", "cancelled")))
                                     .group_by(Service.plan_id)).all())
    return render_template("admin/plans.html", plans=rows, counts=counts, form=form, errors=errors)


@bp.route("/customers")
@operator_required
def customers():
    """GET /admin/customers: every account with its live-service count, newest first."""
    from panel.models import User

    rows = db.session.scalars(db.select(User).order_by(User.id.desc()).limit(1000)).all()
    counts = dict(db.session.execute(db.select(Service.user_id, db.func.count())
                                     .where(Service.status.not_in(("terminated", "cancelled")))
                                     .group_by(Service.user_id)).all())
    return render_template("admin/customers.html", users=rows, counts=counts, form=ActionForm())


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
        user.is_active_flag = action == "enable"
        db.session.commit()
        flash(f"{user.email} {action}d.", "success")
    return redirect(url_for("admin.customers"))


@bp.route("/operations")
@operator_required
def operations():
    """GET /admin/operations: every operation (job), filtered by ``state``."""
    state = request.args.get("state") or ""
    query = db.select(Operation).order_by(Operation.id.desc())
    if state:
        query = query.where(Operation.state == state)
    rows = db.session.scalars(query.limit(500)).all()
    return render_template("admin/operations.html", operations=rows, state=state)


@bp.route("/sweep", methods=["POST"])
@operator_required
def sweep():
    """POST /admin/sweep: run the sweep now (hand over work that is due or whose worker died)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    done = dispatch.sweep()
    flash(f"The sweep handed over {len(done)} item(s).", "success")
    return redirect(url_for("admin.services"))


@bp.route("/plugins")
@operator_required
def plugin_list():
    """GET /admin/plugins: each backend, enabled or not, its settings (secrets masked) and its plans."""
    rows = []
    for name, cls in sorted(plugins().backends.items()):
        values, source = raw_settings(name)
        shown = []
        for f in cls.settings_schema:
            value = values.get(f.name)
            if f.secret and value not in (None, ""):
                value = MASK
            shown.append((f, value, source.get(f.name, "unset")))
        plans = db.session.scalars(db.select(Plan).where(Plan.backend == name)).all()
        rows.append({"name": name, "cls": cls, "enabled": is_enabled(name), "settings": shown,
                     "plans": plans})
    return render_template("admin/plugins.html", rows=rows, form=ActionForm())


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
        set_enabled(name, action == "enable")
        flash(f"{name} {action}d.", "success")
    return redirect(url_for("admin.plugin_list"))

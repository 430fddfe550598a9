"""The operator console's tools (issue 12): the doctor, reconcile (with adopt), plugin settings from
the web, and operator actions on a service (note, change plan, force-terminate, purge).

Every action here is audited (``panel.audit.record``) without secret values.
"""
from __future__ import annotations

import json

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from panel import audit, lifecycle
from panel.admin import bp
from panel.admin.routes import _actor, operator_required
from panel.backends import MASK, BackendError, ValidationError, schema_fields
from panel.customer.forms import ActionForm
from panel.extensions import db
from panel.models import Plan, Service
from panel.security import accepts_files

NOTE_MAX = 2000


# --------------------------------------------------------------------------- the doctor

@bp.route("/doctor")
@operator_required
def doctor():
    """GET /admin/doctor: every ``panel doctor`` check, each problem with its fix (runs them now)."""
    from panel import doctor as checks

    report = checks.run()
    return render_template("admin/doctor.html", report=report)


# --------------------------------------------------------------------------- reconcile and adopt

def _reconcilable() -> list[str]:
    from panel.plugins import plugins

    return sorted(name for name, cls in plugins().backends.items() if cls.supports("list_resources"))


def _adopt_form(name: str):
    from flask_wtf import FlaskForm
    from flask_wtf.file import FileAllowed, FileField
    from wtforms import SelectField, SubmitField
    from wtforms.validators import Optional

    class AdoptForm(FlaskForm):
        plan = SelectField("Plan of every adopted object", validators=[Optional()], choices=[("", "match each object's resources")] + [
            (p.slug, f"{p.slug} ({p.name})") for p in db.session.scalars(
                db.select(Plan).where(Plan.backend == name).order_by(Plan.sort_order, Plan.id))])
        mapping = FileField("Mapping file (CSV: remote,email[,plan]; optional)",
                            validators=[FileAllowed(["csv", "txt"], "Upload a .csv file.")])
        submit = SubmitField("Adopt")

    return AdoptForm()


@bp.route("/reconcile")
@bp.route("/reconcile/<name>")
@operator_required
def reconcile_page(name: str | None = None):
    """GET /admin/reconcile[/<backend>]: a backend's drift (``panel reconcile NAME``) with buttons to
    fix it and to adopt what runs without a record (``--adopt``)."""
    from panel.reconcile import reconcile as run

    names = _reconcilable()
    if name is None:
        return render_template("admin/reconcile.html", names=names, name=None)
    if name not in names:
        abort(404)
    report, error = None, None
    try:
        report = run(name, fix=False)
    except BackendError as exc:
        error = str(exc)
    return render_template("admin/reconcile.html", names=names, name=name, report=report, error=error,
                           form=ActionForm(), adopt_form=_adopt_form(name))


@bp.route("/reconcile/<name>/fix", methods=["POST"])
@operator_required
def reconcile_fix(name: str):
    """POST: ``panel reconcile NAME --fix`` from the web; shows what was done."""
    from panel.reconcile import reconcile as run

    if name not in _reconcilable():
        abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        report = run(name, fix=True)
    except BackendError as exc:
        flash(f"{name}: {exc}", "error")
        return redirect(url_for("admin.reconcile_page", name=name))
    audit.record(current_user, "reconcile.fix", ("plugin", name), detail="\n".join(report.lines())[:2000])
    audit.commit()
    fixed = [d for d in report.drift if d.fixed]
    flash(f"{name}: {len(fixed)} drift(s) fixed.", "success")
    return render_template("admin/reconcile.html", names=_reconcilable(), name=name, report=report, error=None,
                           form=ActionForm(), adopt_form=_adopt_form(name), fixed=True)


@bp.route("/reconcile/<name>/adopt", methods=["POST"])
@operator_required
@accepts_files("mapping")
def reconcile_adopt(name: str):
    """POST: ``panel reconcile NAME --adopt [--plan] [--mapping]`` from the web; shows the report
    (examined / adopted / events inserted / skipped, with why)."""
    from panel.reconcile import MappingError, adopt, load_mapping

    if name not in _reconcilable():
        abort(404)
    form = _adopt_form(name)
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(str(error), "error")
        return redirect(url_for("admin.reconcile_page", name=name)), 303
    try:
        mapping = None
        if form.mapping.data:
            raw = form.mapping.data.read(1_000_001)
            if len(raw) > 1_000_000:
                raise MappingError("the mapping file is larger than 1 MB")
            mapping = load_mapping(raw.decode("utf-8", errors="replace"))
        result = adopt(name, actor=_actor(), plan_slug=form.plan.data or None, mapping=mapping)
    except (MappingError, LookupError) as exc:
        flash(f"Nothing adopted: {exc}", "error")
        return redirect(url_for("admin.reconcile_page", name=name)), 303
    except BackendError as exc:
        flash(f"{name}: {exc}", "error")
        return redirect(url_for("admin.reconcile_page", name=name)), 303
    audit.record(current_user, "reconcile.adopt", ("plugin", name),
                 after={"examined": result.examined, "adopted": [sid for _, sid in result.adopted],
                        "events": result.events, "skipped": len(result.skipped)},
                 detail="\n".join(result.lines())[:2000])
    audit.commit()
    flash(result.lines()[0], "success" if not result.skipped else "info")
    return render_template("admin/reconcile.html", names=_reconcilable(), name=name, report=None, error=None,
                           adopted=result, form=ActionForm(), adopt_form=_adopt_form(name))


# --------------------------------------------------------------------------- plugin settings

def _settings_form(name: str, cls, formdata=None):
    from panel.admin.forms import settings_form_class
    from panel.plugins import raw_settings

    values, source = raw_settings(name)
    form_cls = settings_form_class(schema_fields(cls.Settings), values, source)
    return form_cls(formdata=formdata, prefix=f"{name}-"), values, source


def render_plugins(errors_for: str | None = None, form=None, status: int = 200):
    """The Plugins page: per backend its state, plans, links and a settings form (``form`` for the
    backend ``errors_for`` carries a failed submit's values and field errors)."""
    from panel.plugins import is_enabled, plugins

    rows = []
    for name, cls in sorted(plugins().backends.items()):
        built, values, source = _settings_form(name, cls)
        if name == errors_for and form is not None:
            built = form
        fields = []
        for f in schema_fields(cls.Settings):
            shown = values.get(f.name)
            if f.secret and shown not in (None, ""):
                shown = MASK
            fields.append({"spec": f, "source": source.get(f.name, "unset"), "shown": shown})
        plans = db.session.scalars(db.select(Plan).where(Plan.backend == name).order_by(Plan.sort_order, Plan.id)).all()
        rows.append({"name": name, "cls": cls, "enabled": is_enabled(name), "form": built, "fields": fields,
                     "plans": plans, "can_test": cls.supports("test_connection"),
                     "can_reconcile": cls.supports("list_resources")})
    return render_template("admin/plugins.html", rows=rows, form=ActionForm()), status


@bp.route("/plugins/<name>/settings", methods=["POST"])
@operator_required
def plugin_settings(name: str):
    """POST /admin/plugins/<name>/settings: store the settings form (all or nothing). Secrets are
    write-only: an empty secret input keeps the stored value, ``clear_<name>`` removes it; an
    emptied plain input removes the stored value (the default applies). Field errors answer 422 with
    the form; each stored change is audited (secret values masked)."""
    from panel.admin.forms import CLEAR_PREFIX, SETTING_PREFIX
    from panel.plugins import plugins, update_settings

    cls = plugins().backends.get(name) or abort(404)
    form, values, source = _settings_form(name, cls, formdata=request.form)
    if not form.validate_on_submit():
        return render_plugins(name, form, 400)
    changes: dict[str, object] = {}
    unset: set[str] = set()
    for f in schema_fields(cls.Settings):
        if source.get(f.name) == "env":
            continue
        field = getattr(form, SETTING_PREFIX + f.name)
        raw = field.data
        if f.secret:
            clear = getattr(form, CLEAR_PREFIX + f.name, None)
            if clear is not None and clear.data:
                unset.add(f.name)
            elif raw:
                changes[f.name] = raw
            continue
        if f.type == "boolean":
            if bool(raw) != bool(values.get(f.name)):
                changes[f.name] = "true" if raw else "false"
            continue
        text = "" if raw is None else str(raw).strip()
        current = values.get(f.name)
        shown = "" if current is None else (json.dumps(current) if f.type in ("object", "array", "") else str(current))
        if text == shown.strip():
            continue  # unchanged
        if text:
            changes[f.name] = text
        elif source.get(f.name) == "db":
            unset.add(f.name)
    try:
        done = update_settings(name, changes, unset=unset)
    except ValidationError as exc:
        for key, message in exc.errors.items():
            field = getattr(form, SETTING_PREFIX + key, None)
            if field is not None:
                field.errors = list(field.errors or []) + [message]
            else:
                flash(f"{key}: {message}", "error")
        flash(f"{name}: nothing was saved; correct the settings marked below.", "error")
        return render_plugins(name, form, 422)
    for key, value in done:
        audit.record_setting(current_user, name, key, value)
    from panel.plugins import BackendNotConfigured, settings_for

    try:
        settings_for(name)
        missing = ""
    except BackendNotConfigured as exc:
        missing = str(exc)
    if done:
        flash(f"{name}: {len(done)} setting(s) saved ({', '.join(k for k, _ in done)}).", "success")
    else:
        flash(f"{name}: nothing changed.", "info")
    if missing:
        flash(missing, "error")
    return redirect(url_for("admin.plugin_list") + f"#plugin-{name}", 303)


# --------------------------------------------------------------------------- operator actions on a service

def _service(service_id: int) -> Service:
    svc = db.session.get(Service, service_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    return svc


def _back(svc: Service):
    return redirect(url_for("admin.service", service_id=svc.id), 303)


def _done(svc: Service, action: str, message: str, **change):
    """Audit the operator's ``action`` on ``svc`` (``before``/``after``), commit, tell, go back."""
    audit.record(current_user, action, svc, **change)
    audit.commit()
    flash(message, "success")
    return _back(svc)


def plan_choices(svc: Service) -> list[Plan]:
    """Plans an operator may move ``svc`` to: the same backend's other active plans."""
    return db.session.scalars(db.select(Plan).where(Plan.backend == svc.backend, Plan.id != svc.plan_id,
                                                    Plan.active.is_(True)).order_by(Plan.sort_order, Plan.id)).all()


@bp.route("/services/<int:service_id>/note", methods=["POST"])
@operator_required
def service_note(service_id: int):
    """POST: add an operator's note to the service's event log (``note`` kind: customers never
    see it)."""
    svc = _service(service_id)
    text = (request.form.get("note") or "").strip()
    if not text:
        flash("Write the note first.", "error")
        return _back(svc)
    text = text[:NOTE_MAX]
    lifecycle.note(svc, f"note by {current_user.email}: {text}", actor=_actor(), kind="note")
    return _done(svc, "service.note", "Note added.", after={"note": text[:500]})


@bp.route("/services/<int:service_id>/change-plan", methods=["POST"])
@operator_required
def service_change_plan(service_id: int):
    """POST: move the service to another plan of its backend. With a running Stripe subscription
    the change goes through billing (``panel.billing.change_plan``: prorated in Stripe, the
    backend's ``change_plan`` runs when Stripe's event arrives); otherwise straight through the
    lifecycle (a ``change_plan`` operation)."""
    from panel import billing
    from panel.plugins import backend_class

    svc = _service(service_id)
    plan = Plan.by_slug(request.form.get("plan") or "")
    if plan is None or plan.id not in {p.id for p in plan_choices(svc)}:
        flash("Choose one of the offered plans.", "error")
        return _back(svc)
    before = {"plan": svc.plan.slug}
    sub = None
    if billing.configured():
        from panel.billing.checkout import subscription_for

        sub = subscription_for(svc)
    try:
        if sub is not None and sub.stripe_subscription_id and sub.deleted_at is None:
            if plan.is_free:
                raise lifecycle.LifecycleError("this service is billed through Stripe: a move to a free plan "
                                               "goes through cancelling its subscription")
            billing.change_plan(svc, plan, actor=_actor())
            how = "through billing (prorated in Stripe)"
        else:
            if not backend_class(svc.backend).supports("change_plan"):
                raise lifecycle.LifecycleError(f"the {svc.backend} backend cannot change plans")
            note = "" if plan.is_free else " (no Stripe subscription: the new plan is not billed)"
            lifecycle.request(svc, "change_plan", actor=_actor(), payload={"plan_id": plan.id},
                              detail=f"plan change to {plan.slug} by operator{note}")
            how = "through the lifecycle" + note
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
        return _back(svc)
    return _done(svc, "service.change_plan", f"Plan change to {plan.slug} requested {how}.", before=before,
                 after={"plan": plan.slug, "how": how})


@bp.route("/services/<int:service_id>/force-terminate", methods=["POST"])
@operator_required
def service_force_terminate(service_id: int):
    """POST: terminate the service whatever the backend answers: waiting operations are superseded,
    the backend's force delete is used where it has one (Pterodactyl), and if the backend still
    cannot delete it the service ends ``terminated`` with the backend's message recorded (what
    remains is listed by reconcile). Takes a ``reason``."""
    svc = _service(service_id)
    reason = (request.form.get("reason") or "").strip()[:500]
    before = {"status": svc.status}
    try:
        lifecycle.request(svc, "terminate", actor=_actor(), payload={"force": True},
                          detail="force-terminate by operator" + (f": {reason}" if reason else ""))
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
        return _back(svc)
    return _done(svc, "service.force_terminate", "Force-terminate requested.", before=before,
                 after={"status": svc.status, **({"reason": reason} if reason else {})})


@bp.route("/services/<int:service_id>/purge", methods=["POST"])
@operator_required
def service_purge(service_id: int):
    """POST: delete a terminated service's retained data now (``Backend.purge``, e.g. Docker volumes
    and database), whatever the retention window; runs as a ``purge`` operation."""
    svc = _service(service_id)
    try:
        lifecycle.request(svc, "purge", actor=_actor(), detail="purge of the retained data by operator")
    except (lifecycle.LifecycleError, BackendError) as exc:
        flash(str(exc), "error")
        return _back(svc)
    return _done(svc, "service.purge", "Purge of the retained data requested.", before={"status": svc.status})


@bp.app_context_processor
def _console_helpers():
    """Template helpers of the service page: the plans an operator may move a service to, and
    whether its backend purges retained data."""
    def can_purge(svc) -> bool:
        from panel.plugins import plugins

        cls = plugins().backends.get(svc.backend)
        return bool(cls and cls.supports("purge"))

    return {"operator_plan_choices": plan_choices, "operator_can_purge": can_purge}

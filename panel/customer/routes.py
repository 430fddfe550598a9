"""Customer routes. A customer only ever sees their own services (others answer 404)."""
from flask import abort, flash, jsonify, redirect, render_template, url_for
from flask_login import current_user, login_required

from panel import lifecycle, views
from panel.customer import bp
from panel.customer.forms import ActionForm, order_form_class
from panel.extensions import (account_key, address_key, db, is_operator_request, limiter, order_address_limit,
                              order_limit)
from panel.models import Service
from panel.orders import OrderError, get_plan, orderable_plans, place_order
from panel.plugins import backend_class


@bp.route("/")
def index():
    """GET /: the services list (customers), the console (operators) or the plans (visitors)."""
    if current_user.is_authenticated:
        if current_user.is_operator:
            return redirect(url_for("admin.services"))
        return redirect(url_for("customer.services"))
    return redirect(url_for("customer.plans"))


@bp.route("/plans")
def plans():
    """GET /plans: orderable plans."""
    return render_template("customer/plans.html", plans=orderable_plans())


@bp.route("/order/<slug>", methods=["GET", "POST"])
@login_required
@limiter.limit(order_limit, key_func=account_key, exempt_when=is_operator_request, methods=["POST"])
@limiter.limit(order_address_limit, key_func=address_key, exempt_when=is_operator_request, methods=["POST"])
def order(slug):
    """GET/POST /order/<slug>: the order form built from the backend's order params, with field-level
    messages.
    """
    try:
        plan = get_plan(slug)
    except OrderError as exc:
        flash(exc.message, "error")
        return redirect(url_for("customer.plans"))
    schema = backend_class(plan.backend).order_params_schema
    form = order_form_class(schema)()
    if form.validate_on_submit():
        params = {}
        for f in schema:
            value = getattr(form, f"param_{f.name}").data
            if value not in (None, ""):
                params[f.name] = value
        try:
            result = place_order(current_user, slug, params, actor=f"customer:{current_user.email}")
        except OrderError as exc:
            for name, message in exc.fields.items():
                target = getattr(form, f"param_{name}", None)
                if target is not None:
                    target.errors = list(target.errors) + [message]
                else:
                    flash(f"{name}: {message}", "error")
            if not exc.fields:
                flash(exc.message, "error")
        else:
            if result.checkout_url:
                return redirect(result.checkout_url, code=303)
            flash("Order placed. Your service is being set up.", "success")
            return redirect(url_for("customer.service", service_id=result.service.id))
    return render_template("customer/order.html", plan=plan, form=form, schema=schema)


@bp.route("/services")
@login_required
def services():
    """GET /services: the customer's services."""
    rows = db.session.scalars(db.select(Service).where(Service.user_id == current_user.id)
                              .order_by(Service.id.desc())).all()
    return render_template("customer/services.html", services=rows)


def own_service(service_id: int) -> Service:
    """The service ``service_id`` if the current user owns it (or is an operator); else 404."""
    service = db.session.get(Service, service_id)
    if service is None or (service.user_id != current_user.id and not current_user.is_operator):
        abort(404)
    return service


@bp.route("/services/<int:service_id>")
@login_required
def service(service_id):
    """GET /services/<id>: status with live progress, details, usage (charts) and history."""
    svc = own_service(service_id)
    return render_template("customer/service.html", service=svc, data=views.service_json(svc),
                           events=list(reversed(svc.events)), form=ActionForm())


@bp.route("/services/<int:service_id>/status.json")
@login_required
def service_status(service_id):
    """Polled by the service page while something is in progress (no reload needed)."""
    svc = own_service(service_id)
    return jsonify(views.service_json(svc, live=False))


@bp.route("/services/<int:service_id>/cancel", methods=["POST"])
@login_required
def cancel(service_id):
    """POST /services/<id>/cancel: cancel an unpaid order, cancel a paid one at period end, or
    terminate a free one.
    """
    svc = own_service(service_id)
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    actor = f"customer:{current_user.email}"
    try:
        if svc.status == "pending_payment":
            lifecycle.cancel(svc, actor=actor)
            flash("Order cancelled.", "success")
        elif not svc.plan.is_free:
            from panel import billing

            billing.cancel_at_period_end(svc, actor=actor)
            flash("Your subscription will end at the close of the billing period.", "success")
        else:
            lifecycle.request(svc, "terminate", actor=actor, detail="cancelled by the customer")
            flash("Your service is being removed.", "success")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    return redirect(url_for("customer.service", service_id=svc.id))

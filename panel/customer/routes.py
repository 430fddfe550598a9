"""Customer routes. A customer only ever sees their own services (others answer 404)."""
from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from panel import lifecycle, views
from panel.backends import json_schema, schema_fields
from panel.customer import bp
from panel.customer.forms import ActionForm, order_form_class
from panel.extensions import account_key, db, is_operator_request, limiter, order_limit
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


def _term_words(term):
    from panel.billing.prices import term_words

    return term_words(term)


@bp.route("/plans")
def plans():
    """GET /plans: orderable plans with their price per term (a term switch), add-ons and their
    prices, "free", tax included or not, and "sold out" (``panel.storefront``)."""
    from panel import storefront

    cards = storefront.cards(orderable_plans(), current_user)
    terms = storefront.all_terms(cards)
    term = request.args.get("term")
    if term not in terms:
        term = "monthly" if "monthly" in terms else (terms[0] if terms else None)
    return render_template("customer/plans.html", cards=cards, terms=terms, term=term, term_words=_term_words,
                           tax_on=bool(current_app.config.get("STRIPE_TAX")),
                           tax_default=current_app.config.get("STRIPE_TAX_BEHAVIOR"))


@bp.route("/order/<slug>", methods=["GET", "POST"])
@login_required
@limiter.limit(order_limit, key_func=account_key, exempt_when=is_operator_request, methods=["POST"])
def order(slug):
    """GET/POST /order/<slug>[?term=yearly]: the order form: the billing term and add-ons (with their
    prices), then the backend's order params, with field-level messages.
    """
    from panel import storefront

    try:
        plan = get_plan(slug)
    except OrderError as exc:
        flash(exc.message, "error")
        return redirect(url_for("customer.plans"))
    card = storefront.card(plan, current_user)
    doc = json_schema(backend_class(plan.backend).OrderParams)
    schema = schema_fields(doc)
    form = order_form_class(doc)()
    errors: dict[str, str] = {}
    term = request.values.get("term") or None
    if term not in card.offers:
        term = plan.default_term if plan.default_term in card.offers else next(iter(card.offers), None)
    chosen = request.form.getlist("addons") if request.method == "POST" else request.args.getlist("addon")
    if form.validate_on_submit():
        params = {}
        for f in schema:
            value = getattr(form, f"param_{f.name}").data
            if value not in (None, ""):
                params[f.name] = value
        try:
            result = place_order(current_user, slug, params, actor=f"customer:{current_user.email}",
                                 term=None if plan.is_free or card.complimentary else request.form.get("term") or term,
                                 addons=chosen)
        except OrderError as exc:
            for name, message in exc.fields.items():
                target = getattr(form, f"param_{name}", None)
                if target is not None:
                    target.errors = list(target.errors) + [message]
                elif name in ("term", "addons"):
                    errors[name] = message
                else:
                    flash(f"{name}: {message}" if name else message, "error")
            if not exc.fields:
                flash(exc.message, "error")
        else:
            if result.checkout_url:
                return redirect(result.checkout_url, code=303)
            flash("Order placed. Your service is being set up.", "success")
            return redirect(url_for("customer.service", service_id=result.service.id))
    total = None if card.complimentary else storefront.total(card, term, chosen)
    exponent = currency = None
    if total:
        from panel.billing.prices import minor_exponent

        currency, exponent = total["currency"], minor_exponent(total["currency"])
    tax_note = card.offers[term].get("tax") if term in card.offers else None
    return render_template("customer/order.html", plan=plan, form=form, schema=schema, card=card, term=term,
                           chosen=chosen, errors=errors, total=total, exponent=exponent, currency=currency,
                           tax_note=tax_note, term_words=_term_words)


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
    """POST /services/<id>/cancel: cancel an unpaid order, end a paid subscription at period end
    (the plan's ``on_cancel`` then applies), or terminate anything else (free, complimentary,
    invoiced; its charge, if any, stops).
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
        elif svc.billing_mode == "stripe" and svc.status not in ("failed", "needs_reconcile"):
            from panel import billing

            flash(billing.cancel_at_period_end(svc, actor=actor), "success")
        else:
            from panel.billing.changes import terminate

            flash(terminate(svc, actor=actor, detail="cancelled by the customer"), "success")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    return redirect(url_for("customer.service", service_id=svc.id))

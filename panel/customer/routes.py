"""Customer routes. A customer only ever sees their own services (others answer 404)."""
from flask import (abort, current_app, flash, jsonify, make_response, redirect, render_template, request,
                   url_for)
from flask_babel import gettext as _
from flask_login import current_user, login_required

from panel import client_area, lifecycle, messages, names, views
from panel.backends import BackendError, ValidationError, json_schema, schema_fields
from panel.customer import bp
from panel.customer.forms import ActionForm, order_form_class
from panel.extensions import (account_key, address_key, db, is_operator_request, limiter, order_address_limit,
                              order_account_key, order_limit, order_placed)
from panel.models import Service
from panel.orders import OrderError, get_plan, orderable_plans, place_order, validate_params
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
    from panel.billing.prices import terms_text

    return render_template("customer/plans.html", cards=cards, terms=terms, term=term, term_words=_term_words,
                           terms_text=terms_text,
                           tax_on=bool(current_app.config.get("STRIPE_TAX")),
                           tax_default=current_app.config.get("STRIPE_TAX_BEHAVIOR"))


@bp.route("/order/<slug>", methods=["GET", "POST"])
@login_required
@limiter.shared_limit(order_limit, scope="orders", key_func=order_account_key, exempt_when=is_operator_request,
                      methods=["POST"], deduct_when=order_placed)
@limiter.limit(order_address_limit, key_func=address_key, exempt_when=is_operator_request, methods=["POST"])
def order(slug):
    """GET/POST /order/<slug>[?term=yearly]: the order form: the billing term and add-ons (with their
    prices), then the backend's order params, with field-level messages. A value the backend would
    rewrite ("Jürgen Müller" -> ``j-rgen-m-ller``) is not used silently: the form comes back (422)
    with "will be ..." and the new value filled in, and the next submit orders it.
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
    notes: dict[str, str] = {}
    status = 200
    if form.validate_on_submit():
        params = {}
        for f in schema:
            value = getattr(form, f"param_{f.name}").data
            if value not in (None, ""):
                params[f.name] = value
        try:
            changed = names.rewrites(schema, params, validate_params(plan, params))
            if changed:
                for name, value in changed.items():
                    getattr(form, f"param_{name}").data = value
                    notes[name] = names.will_be(value)
                status = 422
            else:
                result = place_order(current_user, slug, params, actor=f"customer:{current_user.email}",
                                     term=None if plan.is_free or card.complimentary else request.form.get("term") or term,
                                     addons=chosen)
        except OrderError as exc:
            status = exc.status if 400 <= exc.status < 500 else 422
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
            if not changed:
                if result.checkout_url:
                    return redirect(result.checkout_url, code=303)
                flash(_("Order placed. Your service is being set up."), "success")
                return redirect(url_for("customer.service", service_id=result.service.id))
    elif form.is_submitted():
        status = 422
    total = None if card.complimentary else storefront.total(card, term, chosen)
    exponent = currency = None
    if total:
        from panel.billing.prices import minor_exponent

        currency, exponent = total["currency"], minor_exponent(total["currency"])
    tax_note = card.offers[term].get("tax") if term in card.offers else None
    return render_template("customer/order.html", plan=plan, form=form, schema=schema, notes=notes, card=card,
                           term=term, chosen=chosen, errors=errors, total=total, exponent=exponent,
                           currency=currency, tax_note=tax_note, term_words=_term_words), status


@bp.get("/order/<slug>/preview")
@login_required
@limiter.limit("120 per minute", key_func=account_key)
def order_preview(slug):
    """GET /order/<slug>/preview?param_<name>=...: what the backend makes of each value while the
    customer types: ``{"fields": {name: {"value", "note", "error"}}}`` (JSON, nothing stored)."""
    try:
        plan = get_plan(slug)
    except OrderError as exc:
        return jsonify({"error": {"code": exc.code, "message": exc.message}}), exc.status
    schema = schema_fields(backend_class(plan.backend).OrderParams)
    raw = {f.name: request.args.get(f"param_{f.name}") for f in schema
           if request.args.get(f"param_{f.name}") not in (None, "")}
    fields = {f.name: {"value": raw.get(f.name), "note": "", "error": ""} for f in schema}
    try:
        clean = validate_params(plan, raw)
    except OrderError as exc:
        for name, message in exc.fields.items():
            if name in fields and name in raw:
                fields[name]["error"] = message
        return jsonify({"fields": fields})
    for name, value in names.rewrites(schema, raw, clean).items():
        fields[name].update(value=value, note=_("Will be “%(value)s”.", value=value))
    from panel.orders import claim_for
    from panel.plugins import get_backend

    try:
        claim_for(get_backend(plan.backend), plan, clean, current_user)
    except OrderError as exc:
        for name, message in exc.fields.items():
            if name in fields and (name in raw or not raw):
                fields[name]["error"] = message
    return jsonify({"fields": fields})


@bp.route("/services")
@login_required
def services():
    """GET /services: the customer's services."""
    rows = db.session.scalars(db.select(Service).where(Service.user_id == current_user.id)
                              .order_by(Service.id.desc())).all()
    return render_template("customer/services.html", services=rows)


def own_service(service_id: int, *, snapshot: bool = False) -> Service:
    """The service ``service_id`` if the current user owns it (or is an operator); else 404.

    ``snapshot=True`` reads it with its operations in one statement (``views.load_service``), for
    pages and polls that show the status beside the operation in progress."""
    service = views.load_service(service_id) if snapshot else db.session.get(Service, service_id)
    if service is None or (service.user_id != current_user.id and not current_user.is_operator):
        abort(404)
    return service


@bp.route("/services/<int:service_id>")
@login_required
def service(service_id):
    """GET /services/<id>: status in plain words with live progress, the backend's client area
    (connect, credentials, resources, how-to, links), actions, usage (charts) and the history in
    customer words. Raw details are on the operator's page only."""
    svc = own_service(service_id, snapshot=True)
    found = client_area.sections(svc)
    return render_template("customer/service.html", service=svc, data=views.service_json(svc, operator=False),
                           sections=found.get("sections") or [], sections_error=bool(found.get("error")),
                           actions=client_area.actions(svc), running=client_area.running_action(svc),
                           status=messages.customer_status(svc), suspension=messages.suspension(svc)
                           if svc.status == "suspended" else None,
                           history=messages.history(svc), form=ActionForm())


@bp.route("/services/<int:service_id>/status.json")
@login_required
def service_status(service_id):
    """Polled by the service page while something is in progress (no reload needed): the
    customer's view (status label, plain message, current operation)."""
    svc = own_service(service_id, snapshot=True)
    return jsonify(views.service_json(svc, live=False, operator=False))


def action_limit() -> str:
    """``PANEL_ACTION_LIMIT`` (default "10 per minute"): service actions per account."""
    return current_app.config["ACTION_LIMIT"]


def reveal_limit() -> str:
    """``PANEL_REVEAL_LIMIT`` (default "5 per minute"): credential reveals (and tries) per account."""
    return current_app.config["REVEAL_LIMIT"]


def actor_for(user) -> str:
    """The actor string recorded for ``user``'s clicks: ``operator:<email>`` or ``customer:<email>``."""
    return f"{'operator' if user.is_operator else 'customer'}:{user.email}"


def start_action(svc: Service, name: str, back: str):
    """Shared by the customer's and the operator's pages: request action ``name`` with the form's
    ``param_<field>`` values, flash the outcome, redirect to ``back``."""
    action = client_area.find(svc, name)
    params = {}
    if action is not None:
        params = {f.name: request.form.get(f"param_{f.name}") for f in action.fields
                  if request.form.get(f"param_{f.name}") not in (None, "")}
    try:
        client_area.request_action(svc, name, params, actor=actor_for(current_user))
    except client_area.ActionError as exc:
        flash(str(exc), "error")
    except ValidationError as exc:
        for field_name, message in exc.errors.items():
            flash(f"{field_name}: {message}", "error")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    else:
        flash(_("%(action)s started. This page shows when it is done.", action=action.label), "success")
    return redirect(back, code=303)


@bp.route("/services/<int:service_id>/actions/<name>", methods=["POST"])
@login_required
@limiter.limit(action_limit, key_func=account_key)
def run_action(service_id, name):
    """POST /services/<id>/actions/<name>: run one of the backend's actions (restart...) as an
    operation; rate limited by ``PANEL_ACTION_LIMIT``; logged in the event log."""
    svc = own_service(service_id)
    return start_action(svc, name, url_for("customer.service", service_id=svc.id))


def _no_store(response):
    response.headers["Cache-Control"] = "no-store, max-age=0"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.route("/services/<int:service_id>/credentials/<name>", methods=["POST"])
@login_required
@limiter.limit(reveal_limit, key_func=account_key)
def reveal_credential(service_id, name):
    """POST /services/<id>/credentials/<name> (``password``): after re-entering the account
    password, the owner sees one credential of the client area. JSON for the page's script
    (``Accept: application/json``), else a small page; always ``Cache-Control: no-store``. Every
    reveal and every refused try is logged in the service's event log; rate limited by
    ``PANEL_REVEAL_LIMIT``. Another customer's service (or an operator) gets 404."""
    svc = own_service(service_id)
    if svc.user_id != current_user.id:
        abort(404)
    cred = client_area.credential(svc, name)
    if cred is None:
        abort(404)
    wants_json = request.accept_mimetypes.best == "application/json"
    actor = actor_for(current_user)
    if not current_user.check_password(request.form.get("password") or ""):
        lifecycle.note(svc, f"{cred.label} reveal refused: wrong password", actor=actor, kind="reveal_refused")
        message = _("This is not your account password.")
        if wants_json:
            body = {"error": {"code": "wrong_password", "message": message, "fields": {"password": message}}}
            return _no_store(make_response(jsonify(body), 403))
        return _no_store(make_response(render_template("customer/credential.html", service=svc, cred=cred,
                                                       value=None, error=message), 403))
    try:
        value = client_area.reveal(svc, name)
    except BackendError:
        current_app.logger.warning("reveal of %s for service %s failed", name, svc.id, exc_info=True)
        message = _("This cannot be shown right now. Try again in a few minutes.")
        if wants_json:
            return _no_store(make_response(jsonify({"error": {"code": "unavailable", "message": message}}), 503))
        return _no_store(make_response(render_template("customer/credential.html", service=svc, cred=cred,
                                                       value=None, error=message), 503))
    lifecycle.note(svc, f"{cred.label} revealed", actor=actor, kind="reveal")
    if wants_json:
        return _no_store(jsonify({"name": cred.name, "label": cred.label, "username": cred.username,
                                  "value": value}))
    return _no_store(make_response(render_template("customer/credential.html", service=svc, cred=cred,
                                                   value=value, error=None)))


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
            flash(_("Order cancelled."), "success")
        elif svc.billing_mode == "stripe" and svc.status not in ("failed", "needs_reconcile"):
            from panel import billing

            flash(billing.cancel_at_period_end(svc, actor=actor), "success")
        else:
            from panel.billing.changes import terminate

            flash(terminate(svc, actor=actor, detail="cancelled by the customer"), "success")
    except lifecycle.LifecycleError as exc:
        flash(str(exc), "error")
    return redirect(url_for("customer.service", service_id=svc.id))


# --------------------------------------------------------------------------- domains the customer brings

@bp.route("/domains", methods=["GET", "POST"])
@login_required
def domains():
    """GET/POST /domains: the customer's own hostnames and the DNS TXT record that proves each one
    (``panel.names``); a hostname outside our domains can be ordered once verified."""
    from panel.models import DomainVerification

    error = None
    if request.method == "POST":
        try:
            row = names.start(current_user, request.form.get("hostname") or "")
        except names.NameError_ as exc:
            error = str(exc)
        else:
            flash(_("Add the DNS record below for %(name)s. We check it every few minutes.", name=row.hostname),
                  "success")
            return redirect(url_for("customer.domains"), code=303)
    rows = db.session.scalars(db.select(DomainVerification).where(DomainVerification.user_id == current_user.id)
                              .order_by(DomainVerification.id.desc())).all()
    return render_template("customer/domains.html", rows=rows, error=error,
                           value=request.form.get("hostname", "")), (422 if error else 200)


def _own_domain(domain_id: int):
    from panel.models import DomainVerification

    row = db.session.get(DomainVerification, domain_id)
    if row is None or row.user_id != current_user.id:
        abort(404)
    return row


@bp.post("/domains/<int:domain_id>/check")
@login_required
@limiter.limit("10 per minute", key_func=account_key)
def domain_check(domain_id):
    """POST /domains/<id>/check: look the TXT record up now."""
    row = _own_domain(domain_id)
    if row.status == "verified" or names.check(row):
        flash(_("%(name)s is verified. You can now order with it.", name=row.hostname), "success")
    else:
        flash(row.last_error or _("Not verified yet."), "error")
    return redirect(url_for("customer.domains"), code=303)


@bp.post("/domains/<int:domain_id>/delete")
@login_required
def domain_delete(domain_id):
    """POST /domains/<id>/delete: forget a hostname (services already running keep it)."""
    row = _own_domain(domain_id)
    db.session.delete(row)
    db.session.commit()
    flash(_("%(name)s removed.", name=row.hostname), "success")
    return redirect(url_for("customer.domains"), code=303)

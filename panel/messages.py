"""What customers read about their service: plain words, what happens next, whom to ask.

Operators keep the technical detail (``Service.status_detail``, the raw event log, the operations
with their last error); customers get, from here:

* ``customer_status(service)``: a headline, a sentence on what it means and what happens next,
  and a tone, for every status; failures and retries never carry the upstream text;
* ``suspension(service)``: why a suspended service is suspended (non-payment with the amount due
  and a pay link from the billing rows, or the operator's reason) and what to do;
* ``support()``: ``PANEL_SUPPORT_URL`` / ``PANEL_SUPPORT_EMAIL``;
* ``history(service)`` / ``event_json``: the event log in customer words, actors as roles
  ("you", "our team", "billing", "automatic"), without staff emails, internal steps or no-op
  transitions.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from panel.models import Operation, Service, ServiceEvent


@dataclass(frozen=True)
class StatusMessage:
    """``headline`` (short), ``text`` (what it means, what happens next), ``tone`` (ok, info,
    warn, bad) and whether to show the support contact."""

    headline: str
    text: str
    tone: str = "info"
    contact: bool = False

    def to_json(self) -> dict:
        """JSON for the API and the live status poll."""
        return {"headline": self.headline, "text": self.text, "tone": self.tone, "contact": self.contact}


STATUS_LABELS = {
    "pending_payment": _l("waiting for payment"),
    "provisioning": _l("setting up"),
    "active": _l("active"),
    "suspended": _l("suspended"),
    "terminating": _l("being removed"),
    "terminated": _l("removed"),
    "failed": _l("needs attention"),
    "needs_reconcile": _l("being checked"),
    "cancelled": _l("cancelled"),
}


def status_label(status: str) -> str:
    """A status in the customer's words and language ("setting up", "needs attention")."""
    return str(STATUS_LABELS.get(status) or status.replace("_", " "))


def support() -> dict:
    """``{"url": ..., "email": ...}`` from ``PANEL_SUPPORT_URL`` / ``PANEL_SUPPORT_EMAIL`` (either may be None)."""
    return {"url": current_app.config.get("SUPPORT_URL"), "email": current_app.config.get("SUPPORT_EMAIL")}


def _retrying(service: Service) -> Operation | None:
    op = service.current_operation
    if op is not None and op.state == "queued" and op.attempts >= 1 and op.last_error:
        return op
    return None


def _paid(service: Service) -> bool:
    return not service.plan.is_free


FAILED_TEXT = {  # the failed operation's action -> (headline, what happens next)
    "provision": (_l("We could not finish setting up your service."),
                  _l("Our team has been told and is looking into it. You have not been charged twice, "
                     "and you do not need to order again.")),
    "suspend": (_l("Something went wrong on our side."),
                _l("Our team has been told and is looking into it.")),
    "unsuspend": (_l("We could not start your service again."),
                  _l("Our team has been told and will bring it back as soon as possible.")),
    "change_plan": (_l("We could not change your plan."),
                    _l("Your service keeps its current plan for now. Our team has been told.")),
    "terminate": (_l("We could not finish removing your service."),
                  _l("Our team has been told and will finish it. You will not be charged for it.")),
}


def customer_status(service: Service) -> StatusMessage:
    """The customer's words for the service's status (never the upstream error)."""
    status = service.status
    if status == "pending_payment":
        return StatusMessage(_("Waiting for your payment"),
                             _("We set up your service as soon as the payment is confirmed."), "warn")
    if status == "provisioning":
        if _retrying(service):
            return StatusMessage(_("Setting up is taking longer than usual"),
                                 _("We ran into a temporary problem and are trying again automatically. "
                                   "You do not need to do anything; this page updates by itself."), "warn")
        return StatusMessage(_("We are setting up your service"),
                             _("This usually takes a few minutes. This page updates by itself."), "info")
    if status == "active":
        op = service.current_operation
        if op is not None and _retrying(service):
            return StatusMessage(_("Your service is running"),
                                 _("A change is taking longer than usual; we are trying again automatically."),
                                 "warn")
        return StatusMessage(_("Your service is running"), "", "ok")
    if status == "suspended":
        info = suspension(service)
        return StatusMessage(info["headline"], info["text"], "warn", contact=info["kind"] == "operator")
    if status == "failed":
        op = service.last_failed_operation
        headline, text = FAILED_TEXT.get(op.action if op else "provision", FAILED_TEXT["provision"])
        if op is not None and op.action == "provision" and not _paid(service):
            text = _l("Our team has been told and is looking into it. You do not need to order again.")
        return StatusMessage(str(headline), str(text), "bad", contact=True)
    if status == "needs_reconcile":  # a lost answer: the backend may or may not have made it
        return StatusMessage(_("We are checking your service"),
                             _("We could not confirm that your service was set up. Our team has been told "
                               "and will finish it; you do not need to do anything, and you have not been "
                               "charged twice."), "warn", contact=True)
    if status == "terminating":
        return StatusMessage(_("Your service is being removed"), _("This takes a moment."), "info")
    if status == "terminated":
        return StatusMessage(_("This service was removed"), _("Its data has been deleted."), "info")
    if status == "cancelled":
        return StatusMessage(_("This order was cancelled"), _("Nothing was charged."), "info")
    return StatusMessage(status.replace("_", " "), "", "info")


def _last_suspend(service: Service) -> Operation | None:
    for op in reversed(service.operations):
        if op.action == "suspend" and op.state in ("succeeded", "running", "queued"):
            return op
    return None


def suspension(service: Service) -> dict:
    """Why the service is suspended: ``{"kind": "non_payment"|"operator"|"other", "headline",
    "text", "note", "amount_due", "currency", "pay_url"}``. For non-payment the amount and pay link
    come from the newest unpaid invoice of the service (the billing rows); for an operator's
    suspension ``note`` is the operator's reason."""
    reason = service.suspension_reason or ""
    op = _last_suspend(service)
    note = ((op.payload or {}).get("note") or "").strip() if op is not None else ""
    out = {"kind": "other", "headline": _("Suspended"), "text": "", "note": note,
           "amount_due": None, "currency": None, "pay_url": None, "notice": None}
    if reason == "non_payment":
        out["kind"] = "non_payment"
        out["headline"] = _("Suspended: payment failed")
        invoice, notice = _unpaid_invoice(service)
        out["notice"] = notice
        if invoice is not None:
            out["amount_due"], out["currency"] = invoice.amount_due, invoice.currency
            url = invoice.hosted_invoice_url or ""
            out["pay_url"] = url if url.startswith(("https://", "http://")) else None
        out["text"] = _("Your service is paused until the payment is made. Your data is kept. "
                        "Pay the open invoice and it starts again by itself.")
    elif reason == "operator" or op is not None and (op.payload or {}).get("reason") == "operator":
        out["kind"] = "operator"
        out["headline"] = _("Suspended by our team")
        out["text"] = _("Your data is kept. Contact us to have it lifted.")
    return out


def _unpaid_invoice(service: Service):
    """``(BillingInvoice | None, notice | None)``: the newest open invoice of the service."""
    try:
        from panel.billing.models import BillingInvoice, Subscription
        from panel.extensions import db
    except ImportError:  # pragma: no cover
        return None, None
    sub = db.session.scalar(db.select(Subscription).where(Subscription.service_id == service.id))
    invoice = db.session.scalar(
        db.select(BillingInvoice).where(BillingInvoice.service_id == service.id,
                                        BillingInvoice.status.in_(("open", "uncollectible")),
                                        BillingInvoice.amount_due > BillingInvoice.amount_paid)
        .order_by(BillingInvoice.created.desc(), BillingInvoice.id.desc()).limit(1))
    return invoice, (sub.notice if sub is not None else None)


# --------------------------------------------------------------------------- history

def role(actor: str | None, service: Service) -> str:
    """An actor string as a role the customer understands: the owner -> "you", an operator ->
    "our team", billing -> "billing", the worker, the sweeper and the system -> "automatic"."""
    actor = actor or "system"
    kind, _sep, who = actor.partition(":")
    if kind in ("customer", "api") and who.lower() == (service.user.email or "").lower():
        return _("you")
    if kind in ("operator", "customer", "api"):
        return _("our team")
    if kind in ("billing", "stripe"):
        return _("billing")
    return _("automatic")


_DONE = {  # action -> customer words when it succeeded
    "provision": _l("Service ready"),
    "unsuspend": _l("Resumed"),
    "terminate": _l("Removed"),
}


def _operation(event: ServiceEvent, ops: dict) -> Operation | None:
    return ops.get(event.operation_id) if event.operation_id else None


def _event_text(event: ServiceEvent, service: Service, ops: dict) -> tuple[str, str] | None:
    """``(text, actor role)`` of one event, or ``None`` when the customer need not see it."""
    op = _operation(event, ops)
    who = role(op.actor if op is not None else event.actor, service)
    kind = event.kind
    payload = (op.payload or {}) if op is not None else {}
    if kind == "created":
        return _("Ordered %(plan)s", plan=service.plan.name), role(event.actor, service)
    if kind == "queued" and event.to_status == "provisioning":
        return _("Setting up started"), who
    if kind == "queued" and event.to_status == "terminating":
        return _("Removal started"), who
    if kind == "retrying":
        return _("A temporary problem: trying again automatically"), _("automatic")
    if kind == "retry":
        return _("Our team tried again"), _("our team")
    if kind == "cancelled" and op is None:
        return _("Order cancelled"), role(event.actor, service)
    if kind == "reveal":  # detail: "<label> revealed"
        label = (event.detail or "").removesuffix(" revealed")
        return _("%(label)s viewed", label=label), role(event.actor, service)
    if kind == "reveal_refused":  # detail: "<label> reveal refused: wrong password"
        label = (event.detail or "").split(" reveal refused", 1)[0]
        return _("Wrong password: %(label)s was not shown", label=label), role(event.actor, service)
    if kind == "requested" and op is not None and op.action == "run_action":
        return _("%(action)s requested", action=payload.get("label") or payload.get("name")), who
    if kind == "requested" and op is not None and op.action == "terminate" and who != _("automatic"):
        return _("Removal requested"), who
    if kind == "billing":
        text = (event.detail or "").lower()
        if "payment failed" in text:
            return _("Payment failed"), _("billing")
        if " paid" in text:
            return _("Payment received"), _("billing")
        return None
    if kind == "failed" and op is not None:
        if op.action == "run_action":
            return _("%(action)s did not work", action=payload.get("label") or payload.get("name")), who
        return _("Something went wrong; our team has been told"), _("automatic")
    if kind == "succeeded" and op is not None:
        if op.action == "run_action":
            message = payload.get("message") or ""
            label = payload.get("label") or payload.get("name")
            return (_("%(action)s done", action=label) + (f": {message}" if message else "")), who
        if event.from_status == event.to_status and op.action in ("suspend", "unsuspend", "provision", "terminate"):
            return None  # a no-op transition
        if op.action == "suspend":
            if payload.get("reason") == "non_payment" or service.suspension_reason == "non_payment" \
                    and payload.get("reason") != "operator":
                return _("Suspended: payment failed"), _("billing")
            note = (payload.get("note") or "").strip()
            return (_("Suspended by our team") + (f": {note}" if note else "")), _("our team")
        if op.action == "change_plan":
            return _("Plan changed"), who
        if op.action == "provision":  # it became ready by itself, whoever ordered it
            who = _("automatic")
        return str(_DONE.get(op.action) or _("Done")), who
    return None


def history(service: Service, events: list[ServiceEvent] | None = None) -> list[dict]:
    """The service's history for the customer, newest first: ``[{"at", "text", "actor", "kind",
    "from", "to"}]``. Internal steps (requested, started, requeued...), operators' notes and
    no-op transitions are left out; nothing names a staff member or carries upstream text."""
    ops = {op.id: op for op in service.operations}
    out = []
    for event in (events if events is not None else list(reversed(service.events))):
        shown = _event_text(event, service, ops)
        if shown is None:
            continue
        text, who = shown
        out.append({"id": event.id, "at": event.at, "text": text, "actor": who, "kind": event.kind,
                    "from": event.from_status, "to": event.to_status})
    return out


def events_json(service: Service) -> list[dict]:
    """The customer's API view of the event log, oldest first: ``{"id", "at" (ISO 8601 with
    offset), "actor" (a role), "kind", "from", "to", "detail" (customer words)}``."""
    out = []
    for item in reversed(history(service)):
        at = item["at"]
        if at is not None and at.tzinfo is None:
            from datetime import timezone

            at = at.replace(tzinfo=timezone.utc)
        out.append({"id": item["id"], "at": at.isoformat() if at else None, "actor": item["actor"],
                    "kind": item["kind"], "from": item["from"], "to": item["to"], "detail": item["text"]})
    return out

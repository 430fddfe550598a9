"""The OpenAPI 3.1 document for API v1, served at ``/api/v1/openapi.json``.

The order params of each installed backend appear as a component schema generated from the
backend's ``OrderParams`` pydantic model (``<Name>OrderParams``, e.g. ``PdsOrderParams``).
"""
from __future__ import annotations

from typing import Mapping

from panel.backends import Backend
from panel.models.catalog import TERMS
from panel.models.services import STATUSES


def order_params_components(backends: Mapping[str, type[Backend]]) -> dict[str, dict]:
    """``{"<Name>OrderParams": JSON Schema}`` for each backend, nested models included under
    prefixed names, with references rewritten to ``#/components/schemas/...``."""
    out: dict[str, dict] = {}
    for name, cls in sorted(backends.items()):
        prefix = "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
        doc = cls.OrderParams.model_json_schema(ref_template=f"#/components/schemas/{prefix}{{model}}")
        for def_name, sub in doc.pop("$defs", {}).items():
            out[prefix + def_name] = sub
        doc["title"] = f"{cls.label or name} order params"
        out[f"{prefix}OrderParams"] = doc
    return out


_MINOR = {"type": "integer", "description": "minor units of the currency (cents)"}
INVOICE_SCHEMA = {
    "type": "object", "description": "an invoice of our own (pay by bank transfer); immutable once issued",
    "required": ["id", "number", "status", "currency", "subtotal", "vat", "total", "lines"],
    "properties": {
        "id": {"type": "integer"}, "number": {"type": "string", "description": "YYYY-NNNNNN, gapless per year"},
        "status": {"type": "string", "enum": ["issued", "paid", "void"]},
        "period_start": {"type": "string", "format": "date"}, "period_end": {"type": "string", "format": "date"},
        "issued_at": {"type": "string", "format": "date-time"}, "due_on": {"type": "string", "format": "date"},
        "currency": {"type": "string", "description": "ISO 4217, lower case"},
        "subtotal": _MINOR, "vat": _MINOR, "total": _MINOR,
        "vat_rate": {"type": "string", "description": "percent, a decimal string (8.10)"},
        "vat_note": {"type": "string"}, "payment_reference": {"type": "string", "description": "ISO 11649 (RF...)"},
        "paid_at": {"type": ["string", "null"], "format": "date-time"},
        "locale": {"type": "string", "description": "the language the invoice was issued in (its line texts)"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {
            "kind": {"type": "string", "enum": ["base", "addon", "metered"]},
            "service_id": {"type": ["integer", "null"]}, "description": {"type": "string"},
            "quantity": {"type": "string", "description": "a decimal string"}, "unit": {"type": "string"},
            "unit_price": {"type": "string", "description": "a decimal string, major units per unit"},
            "amount": _MINOR}}}},
}


def invoice_paths(bearer, path_id) -> dict:
    """The paths of ``GET /invoices``, ``/invoices/{id}`` and ``/invoices/{id}.pdf``."""
    ref = {"$ref": "#/components/schemas/Invoice"}
    return {
        "/invoices": {"get": {"summary": "Your invoices of our own, newest first", "security": bearer, "responses": {
            "200": {"description": "invoices", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"invoices": {"type": "array", "items": ref}}}}}},
            "401": _error()}}},
        "/invoices/{id}": {"get": {"summary": "One invoice with its lines", "security": bearer, "parameters": path_id,
                                   "responses": {"200": {"description": "invoice", "content": {"application/json": {
                                       "schema": {"type": "object", "properties": {"invoice": ref}}}}},
                                       "401": _error(), "404": _error()}}},
        "/invoices/{id}.pdf": {"get": {"summary": "The invoice as PDF", "security": bearer, "parameters": path_id,
                                       "responses": {"200": {"description": "PDF", "content": {"application/pdf": {
                                           "schema": {"type": "string", "format": "binary"}}}},
                                           "401": _error(), "404": _error()}}},
    }


def _error():
    return {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document(backends: Mapping[str, type[Backend]] | None = None) -> dict:
    """The document (a plain dict); ``backends`` (name -> class) add their order params schemas."""
    params = order_params_components(backends or {})
    order_refs = [{"$ref": f"#/components/schemas/{key}"} for key in params if key.endswith("OrderParams")]
    service = {
        "type": "object",
        "required": ["id", "plan", "backend", "status", "status_detail", "params", "usage", "created_at"],
        "properties": {
            "id": {"type": "integer"}, "plan": {"type": "string"}, "backend": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "status_detail": {"type": "string"},
            "params": {"type": "object"},
            "details": {"type": "object", "description": "operators only: raw backend details; secrets masked"},
            "client_area": {"type": "array", "items": {"type": "object"},
                            "description": "customers: the backend's sections (kind connect, credentials, "
                                           "resources, howto, links); credentials name secrets, never hold them"},
            "actions": {"type": "array", "items": {"type": "object"},
                        "description": "customers: actions (name, label, confirm, destructive, statuses, params)"},
            "message": {"type": "object", "description": "customers: headline, text, tone of the status"},
            "status_label": {"type": "string", "description": "customers: the status in plain words"},
            "usage": {"type": "object", "description": "metrics with units"},
            "created_at": {"type": "string", "format": "date-time"},
            "operation": {"type": ["object", "null"]},
        },
    }
    terms = list(TERMS)
    offer = {"type": "object", "description": "a Stripe price as sold: amounts in the currency's minor unit",
             "properties": {
                 "term": {"type": "string", "enum": terms}, "price": {"type": "string", "description": "Stripe price id"},
                 "unit_amount": {"type": "integer", "description": "minor units (cents)"},
                 "currency": {"type": "string", "description": "ISO 4217, lower case"},
                 "amount": {"type": "string", "description": "formatted for the request's locale"},
                 "interval": {"type": "string"}, "interval_count": {"type": "integer"}, "every": {"type": "string"},
                 "display": {"type": "string"}, "tax_behavior": {"type": "string", "enum": ["inclusive", "exclusive"]},
                 "tax": {"type": ["string", "null"], "description": '"incl. tax" / "excl. tax" when Stripe Tax is on'}}}
    subscription = {"type": "object", "properties": {
        "service": {"type": "integer"}, "plan": {"type": "string"}, "term": {"type": ["string", "null"]},
        "billing_mode": {"type": "string", "enum": ["stripe", "free", "complimentary", "invoice"]},
        "status": {"type": "string", "description": "Stripe's subscription status, or the billing mode"},
        "price": {"oneOf": [{"$ref": "#/components/schemas/Offer"}, {"type": "null"}]},
        "renews_at": {"type": ["string", "null"], "format": "date-time"},
        "ends_at": {"type": ["string", "null"], "format": "date-time"},
        "cancel_at_period_end": {"type": "boolean"},
        "then": {"type": "string", "description": "what happens when it ends: suspend, terminate, downgrade:<slug>"},
        "notice": {"type": ["string", "null"]},
        "addons": {"type": "array", "items": {"type": "object", "properties": {
            "addon": {"type": "string"}, "name": {"type": "string"},
            "state": {"type": "string", "enum": ["adding", "active", "removing"]},
            "price": {"oneOf": [{"$ref": "#/components/schemas/Offer"}, {"type": "null"}]}}}},
        "addon_events": {"type": "array", "items": {"type": "object", "description": "append-only add-on log"}},
        "available": {"type": "array", "items": {"type": "object"}}}}
    sub_answer = {"description": "accepted: the change runs as jobs", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"message": {"type": "string"}, "checkout_url": {"type": ["string", "null"]},
                                         "subscription": {"$ref": "#/components/schemas/Subscription"}}}}}}
    path_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    bearer = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "hostpanel API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                   "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}}},
                "Service": service,
                "Offer": offer,
                "Addon": {"type": "object", "properties": {
                    "slug": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                    "free": {"type": "boolean"}, "options": {"type": "object", "description":
                                                             'merged into the plan\'s options: "+N" adds, \'+[...]\' appends, a plain value replaces'},
                    "terms": {"type": "array", "items": {"type": ["string", "null"]},
                              "description": "the plan's terms this add-on is offered on"},
                    "prices": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Offer"}}}},
                "Plan": {"type": "object", "properties": {
                    "slug": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                    "backend": {"type": "string"}, "free": {"type": "boolean"}, "options": {"type": "object"},
                    "terms": {"type": "array", "items": {"type": "string", "enum": terms},
                              "description": "the terms it can be bought on now"},
                    "prices": {"type": "object", "description": "term -> offer",
                               "additionalProperties": {"$ref": "#/components/schemas/Offer"}},
                    "addons": {"type": "array", "items": {"$ref": "#/components/schemas/Addon"}},
                    "max_per_customer": {"type": ["integer", "null"]},
                    "on_cancel": {"type": "string", "description": "suspend, terminate or downgrade:<plan slug>"},
                    "order_params": {"type": "object", "description": "JSON Schema (draft 2020-12) of "
                                     "the params to order this plan; see the <Name>OrderParams schemas"}}},
                "Subscription": subscription,
                "Invoice": INVOICE_SCHEMA,
                **params,
                "Event": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                    "actor": {"type": "string"}, "kind": {"type": "string"},
                    "from": {"type": ["string", "null"]}, "to": {"type": ["string", "null"]},
                    "detail": {"type": "string"}}},
            },
        },
        "paths": {
            **invoice_paths(bearer, path_id),
            "/plans": {"get": {"summary": "Orderable plans", "responses": {"200": {
                "description": "plans", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"plans": {"type": "array", "items": {"$ref": "#/components/schemas/Plan"}}}}}}}}}},
            "/orders": {"post": {
                "summary": "Order a plan", "security": bearer,
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "description": "1-255 printable ASCII characters; a repeated request with the "
                                               "same key and body gets the first answer (header "
                                               "Idempotent-Replayed: true), with another body a 422",
                                "schema": {"type": "string", "maxLength": 255}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["plan"],
                    "properties": {"plan": {"type": "string"},
                                   "term": {"type": "string", "enum": terms, "description": "default: the plan's"},
                                   "addons": {"type": "array", "items": {"type": "string"}, "description": "add-on slugs"},
                                   "params": {
                        "description": "the order params of the plan's backend",
                        **({"anyOf": order_refs} if order_refs else {"type": "object"})}}}}}},
                "responses": {"201": {"description": "ordered", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"service": {"$ref": "#/components/schemas/Service"},
                                                     "checkout_url": {"type": ["string", "null"]}}}}}},
                              "400": _error(), "401": _error(), "404": _error(), "409": _error(), "422": _error()}}},
            "/services": {"get": {"summary": "Your services", "security": bearer, "responses": {
                "200": {"description": "services", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}}}}}}},
                "401": _error()}}},
            "/services/{id}": {"get": {"summary": "One service", "security": bearer,
                                       "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                                       "responses": {"200": {"description": "service", "content": {"application/json": {"schema": {
                                           "type": "object", "properties": {"service": {"$ref": "#/components/schemas/Service"}}}}}},
                                           "401": _error(), "404": _error()}}},
            "/services/{id}/usage": {"get": {"summary": "A service's usage samples (for charts)", "security": bearer,
                                             "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                                                            {"name": "hours", "in": "query", "required": False, "schema": {"type": "number", "default": 24}}],
                                             "responses": {"200": {"description": "samples, oldest first", "content": {"application/json": {"schema": {
                                                 "type": "object", "properties": {"samples": {"type": "array", "items": {
                                                     "type": "object", "properties": {"at": {"type": "string", "format": "date-time"},
                                                                                      "metrics": {"type": "array", "items": {"type": "object"}}}}}}}}}},
                                                 "400": _error(), "401": _error(), "404": _error()}}},
            "/services/{id}/usage/current": {"get": {
                "summary": "Billable usage so far this month and the projected charge (Stripe's upcoming invoice, "
                           "or this month's own invoice so far)", "security": bearer, "parameters": path_id,
                "responses": {"200": {"description": "usage and projected charge (money in minor units)", "content": {
                    "application/json": {"schema": {"type": "object", "required": ["period", "usage", "projected_charge"],
                                                    "properties": {
                        "period": {"type": "object", "properties": {"start": {"type": "string", "format": "date-time"},
                                                                    "end": {"type": "string", "format": "date-time"}}},
                        "usage": {"type": "array", "items": {"type": "object", "properties": {
                            "metric": {"type": "string"}, "used": {"type": "string", "description": "decimal"},
                            "free": {"type": "string", "description": "decimal"},
                            "unit_price": {"type": "string", "description": "decimal, major units per unit"},
                            "currency": {"type": "string"}, "amount": {"type": "integer", "description": "minor units"}}}},
                        "projected_charge": {"type": ["object", "null"], "properties": {
                            "source": {"type": "string", "enum": ["stripe", "invoice"]},
                            "available": {"type": "boolean", "description": "false: the estimate is not available right now"},
                            "currency": {"type": "string"}, "amount_due": {"type": "integer"}, "total": {"type": "integer"},
                            "subtotal": {"type": "integer"}, "vat": {"type": "integer"},
                            "period_end": {"type": ["string", "null"], "format": "date-time"},
                            "lines": {"type": "array", "items": {"type": "object", "properties": {
                                "description": {"type": "string"}, "amount": {"type": "integer"}}}}}}}}}}},
                    "401": _error(), "404": _error()}}},
            "/services/{id}/subscription": {"get": {
                "summary": "How a service is billed: plan, term, status, renewal, add-ons", "security": bearer,
                "parameters": path_id, "responses": {"200": {"description": "subscription", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "subscription": {"$ref": "#/components/schemas/Subscription"}}}}}},
                    "401": _error(), "404": _error()}}},
            "/services/{id}/cancel": {"post": {
                "summary": "Cancel: at the end of the paid period (default) or now", "security": bearer,
                "parameters": path_id,
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"at_period_end": {"type": "boolean", "default": True}}}}}},
                "responses": {"202": sub_answer, "400": _error(), "401": _error(), "404": _error(),
                              "409": _error(), "422": _error()}}},
            "/services/{id}/plan": {"post": {
                "summary": "Change plan or term (prorated; Checkout from a free plan)", "security": bearer,
                "parameters": path_id,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["plan"], "properties": {
                        "plan": {"type": "string"}, "term": {"type": "string", "enum": terms}}}}}},
                "responses": {"202": sub_answer, "400": _error(), "401": _error(), "404": _error(),
                              "409": _error(), "422": _error()}}},
            "/services/{id}/addons": {"post": {
                "summary": "Add or remove add-ons on an active service (prorated)", "security": bearer,
                "parameters": path_id,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"add": {"type": "array", "items": {"type": "string"}},
                                                     "remove": {"type": "array", "items": {"type": "string"}}}}}}},
                "responses": {"202": sub_answer, "400": _error(), "401": _error(), "404": _error(),
                              "409": _error(), "422": _error()}}},
            "/services/{id}/actions/{name}": {"post": {
                "summary": "Run one of the service's actions (restart...)", "security": bearer,
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                               {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"params": {"type": "object"}}}}}},
                "responses": {"202": {"description": "the action was recorded and runs as a job", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "service": {"$ref": "#/components/schemas/Service"}}}}}},
                    "401": _error(), "404": _error(), "409": _error(), "422": _error(), "429": _error()}}},
            "/services/{id}/events": {"get": {"summary": "A service's history (customers: in plain words; operators: the raw log)", "security": bearer,
                                              "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                                              "responses": {"200": {"description": "events", "content": {"application/json": {"schema": {
                                                  "type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}}}}},
                                                  "401": _error(), "404": _error()}}},
        },
    }

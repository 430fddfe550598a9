"""The OpenAPI 3.1 document for API v1, served at ``/api/v1/openapi.json``."""
from panel.models.services import STATUSES


def _error():
    return {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document() -> dict:
    """The document (a plain dict)."""
    service = {
        "type": "object",
        "required": ["id", "plan", "backend", "status", "status_detail", "params", "details", "usage", "created_at"],
        "properties": {
            "id": {"type": "integer"}, "plan": {"type": "string"}, "backend": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "status_detail": {"type": "string"},
            "params": {"type": "object"},
            "details": {"type": "object", "description": "backend details; secrets masked"},
            "usage": {"type": "object", "description": "metrics with units"},
            "created_at": {"type": "string", "format": "date-time"},
            "operation": {"type": ["object", "null"]},
        },
    }
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
                "Plan": {"type": "object", "properties": {
                    "slug": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                    "backend": {"type": "string"}, "free": {"type": "boolean"}, "options": {"type": "object"},
                    "order_params": {"type": "array", "items": {"type": "object"}}}},
                "Event": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                    "actor": {"type": "string"}, "kind": {"type": "string"},
                    "from": {"type": ["string", "null"]}, "to": {"type": ["string", "null"]},
                    "detail": {"type": "string"}}},
            },
        },
        "paths": {
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
                    "properties": {"plan": {"type": "string"}, "params": {"type": "object"}}}}}},
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
            "/services/{id}/events": {"get": {"summary": "A service's event log", "security": bearer,
                                              "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                                              "responses": {"200": {"description": "events", "content": {"application/json": {"schema": {
                                                  "type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}}}}},
                                                  "401": _error(), "404": _error()}}},
        },
    }

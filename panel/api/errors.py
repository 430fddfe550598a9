"""The API's error shape: ``{"error": {"code", "message", "fields"?}}``."""
from flask import jsonify


def error_response(status: int, code: str, message: str, fields: dict | None = None):
    """A JSON error response with HTTP ``status``."""
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    response = jsonify({"error": body})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="hostpanel"'
    return response

"""Error pages: every HTTP error (the CSRF 400 included) gets a styled page in plain words, in the
visitor's language; under ``/api/`` the JSON error shape of ``panel.api.errors`` instead."""
from __future__ import annotations

from flask import redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

#: status -> (title, what to do), in plain words for anyone.
WORDS = {
    400: (_l("This request could not be handled"), _l("Go back and try again.")),
    401: (_l("Please sign in"), _l("Sign in and try again.")),
    403: (_l("Not allowed"), _l("You are not allowed to do that.")),
    404: (_l("Page not found"), _l("We could not find this page. Check the address, or go back to your services.")),
    405: (_l("Not possible here"), _l("This page cannot be used like that. Go back and use the buttons on the page.")),
    409: (_l("Not possible right now"), _l("Something else is in the way. Reload the page and try again.")),
    413: (_l("Too large"), _l("What you sent is too large.")),
    422: (_l("Please check what you entered"), _l("Go back and correct the marked fields.")),
    429: (_l("Too many attempts"), _l("Too many attempts. Wait a minute and try again.")),
    500: (_l("Something went wrong on our side"), _l("Our team has been told. Try again in a few minutes.")),
    503: (_l("Temporarily unavailable"), _l("We are working on it. Try again in a few minutes.")),
}
API_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid",
             429: "rate_limited", 500: "internal", 503: "unavailable"}
API_MESSAGES = {404: "not found", 429: "too many requests, slow down", 500: "internal error"}


def page(code: int, title=None, text=None):
    """The rendered error page for ``code`` (a ``(body, status)`` pair)."""
    default_title, default_text = WORDS.get(code, WORDS[500] if code >= 500 else WORDS[400])
    return render_template("error.html", code=code, title=title or default_title,
                           message=text or default_text), code


def init_app(app) -> None:
    """Register the handlers (HTTP errors, CSRF failures, unhandled exceptions) and ``/favicon.ico``."""

    def api_error(code: int, exc: HTTPException | None):
        from panel.api.errors import error_response

        message = API_MESSAGES.get(code) or (exc.description if exc is not None and exc.description else "error")
        return error_response(code, API_CODES.get(code, f"http_{code}"), str(message))

    @app.errorhandler(CSRFError)
    def csrf_failed(exc):
        if request.path.startswith("/api/"):
            return api_error(400, exc)
        return page(400, _l("This form has expired"),
                    _l("For your safety, forms stop working after a while or when you signed in "
                       "elsewhere. Go back, reload the page and send it again."))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code is None or exc.code < 400:  # routing redirects pass through
            return exc
        if request.path.startswith("/api/"):
            return api_error(exc.code, exc)
        return page(exc.code)

    @app.errorhandler(InternalServerError)
    def server_error(exc):
        if request.path.startswith("/api/"):
            return api_error(500, None)
        return page(500)

    @app.get("/favicon.ico")
    def favicon():
        return redirect(url_for("static", filename="favicon.svg"), code=301)

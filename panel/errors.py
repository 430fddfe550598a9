"""Error pages: every HTTP error (the CSRF 400 included) gets a styled page in plain words, in the
visitor's language; under ``/api/`` the JSON error shape of ``panel.api.errors`` instead."""
from __future__ import annotations

import logging

from flask import redirect, render_template, request, url_for
from markupsafe import escape
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
log = logging.getLogger(__name__)

API_MESSAGES = {404: "not found", 429: "too many requests, slow down", 500: "internal error"}


def page(code: int, title=None, text=None, detail=None):
    """The rendered error page for ``code`` (a ``(body, status)`` pair). ``detail`` is an extra
    sentence the view gave (a 4xx's description); it never carries internals. If the page itself
    fails to render (a broken database session, a template error), a bare page is returned."""
    default_title, default_text = WORDS.get(code, WORDS[500] if code >= 500 else WORDS[400])
    title, text = title or default_title, text or default_text
    try:
        return render_template("error.html", code=code, title=title, message=text, detail=detail), code
    except Exception:  # never fail inside the error page
        log.exception("error page failed to render")
        return f"<!doctype html><title>{code}</title><h1>{escape(title)}</h1><p>{escape(text)}</p>", code


def _rollback() -> None:
    from panel.extensions import db

    try:
        db.session.rollback()
    except Exception:  # the connection itself may be gone; the page must still render
        log.exception("rollback in the error handler failed")


def _pass_headers(response, exc: HTTPException | None):
    """Keep ``Retry-After``, ``WWW-Authenticate`` and ``Allow`` from the exception."""
    if exc is None:
        return response
    from flask import make_response

    response = make_response(response)
    extra = dict(exc.get_headers())
    for name in ("Retry-After", "WWW-Authenticate", "Allow"):
        if extra.get(name) and name not in response.headers:
            response.headers[name] = extra[name]
    return response


def init_app(app) -> None:
    """Register the handlers (HTTP errors, CSRF failures, unhandled exceptions) and ``/favicon.ico``.

    A 5xx rolls the database session back first, so the page renders even after a failed
    transaction; a 429 says when to come back ("Try again in 10 minutes."), in the page and in the
    API's message, with ``Retry-After``.
    """
    from panel.security import retry_message

    def api_error(code: int, exc: HTTPException | None, message: str | None = None):
        from panel.api.errors import error_response

        if message is None:
            message = API_MESSAGES.get(code) or (exc.description if exc is not None and exc.description else "error")
        return _pass_headers(error_response(code, API_CODES.get(code, f"http_{code}"), str(message)), exc)

    @app.errorhandler(CSRFError)
    def csrf_failed(exc):
        if request.path.startswith("/api/"):
            return api_error(400, exc, "this form has expired or came from another page; reload it and try again")
        return page(400, _l("This form has expired"),
                    _l("For your safety, forms stop working after a while or when you signed in "
                       "elsewhere. Go back, reload the page and send it again."))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code is None or exc.code < 400:  # routing redirects pass through
            return exc
        code = exc.code
        if code >= 500:
            _rollback()
        if request.path.startswith("/api/"):
            if code == 429:
                return api_error(code, exc, f"too many requests: {retry_message(exc).lower()}")
            return api_error(code, exc)
        if code == 429:
            return _pass_headers(page(code, text=_l("Too many attempts. %(when)s", when=retry_message(exc))), exc)
        own = code < 500 and exc.description and exc.description != type(exc).description
        return _pass_headers(page(code, detail=exc.description if own else None), exc)

    @app.errorhandler(InternalServerError)
    def server_error(exc):
        _rollback()
        if request.path.startswith("/api/"):
            return api_error(500, None)
        return page(500)

    @app.get("/favicon.ico")
    def favicon():
        return redirect(url_for("static", filename="favicon.svg"), code=301)

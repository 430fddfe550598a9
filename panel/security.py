"""HTTP hardening: proxy handling, security headers and input guards (error pages: ``panel.errors``).

* ``PANEL_TRUSTED_PROXIES`` (default 0): how many reverse proxies stand in front of the panel.
  With N > 0, werkzeug's ``ProxyFix`` takes the client address, scheme, host and prefix from the
  last N ``X-Forwarded-*`` values (rate limits and the audit log then see the real client).
* Security headers through the ``secure`` library: a strict Content-Security-Policy
  (``script-src 'self'``: every script lives in ``panel/static``), ``frame-ancestors 'none'`` and
  ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy``; when
  ``PANEL_PUBLIC_URL`` is https, HSTS (``PANEL_HSTS_MAX_AGE`` seconds, default one year) and
  ``Secure`` session cookies.
* Input guards (``before_request``): NUL bytes in the path, query or form, JSON bodies nested
  deeper than ``MAX_JSON_DEPTH`` or holding a lone surrogate or ``\\u0000``, files sent where a
  form takes none. Request bodies are capped by ``PANEL_MAX_CONTENT_LENGTH`` (bytes, default
  2 MiB). Ids in ``<int:...>`` routes are bounded to 2^63 - 1 (a larger id is a 404).
* ``retry_message``: when a rate-limited caller may come back, for the 429 pages of ``panel.errors``.
"""
from __future__ import annotations

import re

import logging
from urllib.parse import urlsplit

from flask import Flask, current_app, request
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.routing import IntegerConverter

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64
MAX_ID = 2**63 - 1  # PostgreSQL BIGINT / SQLite INTEGER
DEFAULT_MAX_CONTENT_LENGTH = 2 * 1024 * 1024


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` limited to 0..2^63-1: a larger id cannot reach the database (it is a 404)."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def accepts_files(*fields: str):
    """Decorator for a view whose form takes uploads in ``fields`` (other files answer 400)."""
    def mark(view):
        view._upload_fields = set(fields)
        return view

    return mark


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site (``/...``), else ``None``.

    Browsers treat ``//host``, ``/\\host`` and ``\\\\host`` as other sites, and skip tabs, newlines
    and leading spaces; anything like that, any scheme or host, is refused.
    """
    if not target or not isinstance(target, str):
        return None
    if any(ch in target for ch in "\x00\t\r\n\\") or target != target.strip():
        return None
    if not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


# --------------------------------------------------------------------------- JSON guards

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def json_problem(text: str) -> str | None:
    """Why a JSON text must be refused before parsing, or ``None``.

    Checks nesting depth (``MAX_JSON_DEPTH``; deeper input makes ``json.loads`` recurse without
    bound), lone UTF-16 surrogates (they cannot be stored or encoded as UTF-8) and ``\\u0000``
    (PostgreSQL stores no NUL in text or JSONB). Depth is one linear pass over the text; when the
    text holds ``\\u`` escapes, the parsed strings (keys included) are checked.
    """
    depth = 0
    # Strings out first, then everything but brackets (both in C: a webhook body is kilobytes),
    # then one pass over what is left. An unterminated string keeps its brackets (invalid JSON).
    for ch in _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text)):
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return f"JSON is nested deeper than {MAX_JSON_DEPTH} levels"
        else:
            depth -= 1
    if "\\u" in text:  # escapes: parse and look at the strings themselves
        import json

        try:
            value = json.loads(text)
        except ValueError:
            return None  # not JSON at all: the view answers that in its own words
        return _string_problem(value)
    return None


def parsed_json_problem(value, *, strings: bool = True) -> str | None:
    """``json_problem``'s checks on a value ``json.loads`` already returned: nesting deeper than
    ``MAX_JSON_DEPTH``, and with ``strings`` a NUL or lone surrogate in a string (only possible
    when the text held ``\\u`` escapes). One walk over the value, for a route that must parse its
    body anyway after a cheaper check (Stripe's webhook verifies the signature first): about a
    third of the cost of ``json_problem`` on a Stripe event (issue 14)."""
    level, depth = [value], 1
    while level:  # level by level, containers only (the outermost is level 1)
        if depth > MAX_JSON_DEPTH:
            return f"JSON is nested deeper than {MAX_JSON_DEPTH} levels"
        below = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
            below.extend(child for child in children if isinstance(child, (dict, list)))
        level, depth = below, depth + 1
    return _string_problem(value) if strings else None


def _string_problem(value) -> str | None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "JSON holds a NUL character (\\u0000), which cannot be stored"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "JSON holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
    return None


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or mimetype.endswith("+json")


def _guard_input():
    """``before_request``: refuse input that would otherwise reach the database or the JSON parser
    in a shape that raises (a 400 with the reason, never a 500)."""
    if "\x00" in request.path:
        raise BadRequest("The address contains a NUL character.")
    raw_query = request.query_string
    if b"%00" in raw_query or b"\x00" in raw_query:
        raise BadRequest("A query parameter contains a NUL character.")
    if request.content_length is None and request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if _is_json(request.mimetype):
        data = request.get_data(cache=True)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("The body is not UTF-8 text.") from None
        problem = json_problem(text)
        if problem:
            raise BadRequest(problem)
    elif request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = request.form
        except UnicodeDecodeError:
            raise BadRequest("The form is not UTF-8 text.") from None
        for key, value in form.items(multi=True):
            if "\x00" in key or "\x00" in value:
                raise BadRequest(f"The field {key.replace(chr(0), '')!r} contains a NUL character.")
        if request.files:
            view = current_app.view_functions.get(request.endpoint)
            allowed = getattr(view, "_upload_fields", set())
            for key in request.files:
                if key not in allowed:
                    raise BadRequest(f"The field {key!r} takes text, not a file.")
    return None


# --------------------------------------------------------------------------- headers

def _secure_headers(app: Flask):
    import secure

    csp = (secure.ContentSecurityPolicy()
           .default_src("'self'").script_src("'self'").style_src("'self'")
           .img_src("'self'", "data:").connect_src("'self'").font_src("'self'")
           .object_src("'none'").base_uri("'self'").frame_ancestors("'none'"))
    https = app.config["PUBLIC_URL"].startswith("https://")
    hsts = secure.StrictTransportSecurity().max_age(int(app.config["HSTS_MAX_AGE"])) if https else None
    return secure.Secure(
        csp=csp, hsts=hsts,
        xfo=secure.XFrameOptions().deny(),
        xcto=secure.XContentTypeOptions().nosniff(),
        referrer=secure.ReferrerPolicy().strict_origin_when_cross_origin(),
        coop=secure.CrossOriginOpenerPolicy().same_origin(),
        permissions=secure.PermissionsPolicy().geolocation().microphone().camera(),
    )


# --------------------------------------------------------------------------- rate-limit wording

def retry_seconds(exc: HTTPException) -> int | None:
    """Seconds until a rate-limited caller may try again (from Flask-Limiter's window), or None."""
    import time

    from panel.extensions import limiter

    current = limiter.current_limit
    if current is None:
        return None
    return max(1, int(current.reset_at - time.time()))


def human_duration(seconds: int) -> str:
    """``42`` -> "42 seconds", ``600`` -> "10 minutes", ``5400`` -> "2 hours" (rounded up)."""
    def unit(n, word):
        return f"{n} {word}{'' if n == 1 else 's'}"

    if seconds < 90:
        return unit(seconds, "second")
    if seconds < 90 * 60:
        return unit(-(-seconds // 60), "minute")
    return unit(-(-seconds // 3600), "hour")


def retry_message(exc: HTTPException) -> str:
    """"Try again in 10 minutes." (the unit fits the wait), or a generic "Try again later."."""
    seconds = retry_seconds(exc)
    return f"Try again in {human_duration(seconds)}." if seconds else "Try again later."


def init_app(app: Flask) -> None:
    """Install the proxy fix, the bounded int converter, input guards and headers.

    Call before blueprints are registered (the converter applies to routes added afterwards).
    """
    cfg = app.config
    proxies = cfg["TRUSTED_PROXIES"]
    if proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies,
                                x_port=proxies, x_prefix=proxies)
    if cfg["PUBLIC_URL"].startswith("https://"):
        cfg["SESSION_COOKIE_SECURE"] = cfg["REMEMBER_COOKIE_SECURE"] = True
    app.url_map.converters["int"] = BoundedIntConverter
    app.before_request(_guard_input)
    # the headers never change while the app runs: computed once by the secure library, then set
    # (overwriting, as secure's set_headers does) without rebuilding them per response (issue 14)
    headers = tuple(_secure_headers(app).headers.items())

    @app.after_request
    def _headers(response):
        for name, value in headers:
            response.headers.set(name, value)
        return response

    if hasattr(app, "also_bare"):  # panel.app.PanelFlask: Stripe's webhook gets the headers too
        app.also_bare(after=_headers)


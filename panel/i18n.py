"""Languages (Flask-Babel): the locale of each request, and locale-aware dates, money and numbers.

* The locale is, in order: the signed-in user's choice (``User.locale``), the visitor's choice
  (kept in the session), then the browser's ``Accept-Language``; ``LANGUAGES`` lists what we have
  catalogs for (English, the source language, and German: seed 002 sells in Switzerland).
* Catalogs live in ``panel/translations/<lang>/LC_MESSAGES/messages.po`` and their compiled
  ``messages.mo`` (shipped as package data, so a non-editable ``pip install .`` has them). Update
  them with ``pybabel extract -F babel.cfg -o panel/translations/messages.pot .``, then
  ``pybabel update -i panel/translations/messages.pot -d panel/translations`` and
  ``pybabel compile -d panel/translations``.
* Template filters: ``datetime``/``date`` (Babel, in UTC, inside ``<time datetime=...>`` so the
  page's script can show the viewer's own time zone), ``money`` (integer minor units + ISO
  currency code, exact), ``number`` and ``quantity`` (a number with its unit, bytes scaled).
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from babel.numbers import get_currency_precision
from flask import Blueprint, abort, redirect, request, session, url_for
from flask_babel import Babel, format_currency, format_date, format_datetime, format_decimal, get_locale
from flask_babel import gettext as _
from markupsafe import Markup, escape

#: Languages we ship a catalog for: code -> the language's own name.
LANGUAGES = {"en": "English", "de": "Deutsch"}

babel = Babel()
bp = Blueprint("i18n", __name__)


def select_locale() -> str:
    """The request's locale code: the user's choice, the session's, then Accept-Language; ``en``
    outside a request (a job or the CLI renders in an account's language with ``force_locale``)."""
    from flask import has_request_context
    from flask_login import current_user

    if not has_request_context():
        return "en"

    try:
        chosen = getattr(current_user, "locale", None) if current_user.is_authenticated else None
    except Exception:  # outside a request with a user loader (CLI, jobs)
        chosen = None
    if chosen in LANGUAGES:
        return chosen
    if session.get("locale") in LANGUAGES:
        return session["locale"]
    if request:
        return request.accept_languages.best_match(list(LANGUAGES), default="en")
    return "en"


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def format_when(value: datetime | None, fmt: str = "medium") -> Markup:
    """``<time datetime="2024-05-01T10:00:00+00:00" data-local="medium">1 May 2024, 10:00:00 UTC</time>``:
    the date in the request's locale and UTC; panel.js rewrites it into the viewer's time zone."""
    if value is None:
        return Markup("")
    value = _aware(value)
    text = format_datetime(value, fmt, rebase=False) + " UTC"
    return Markup('<time datetime="{}" data-local="{}">{}</time>').format(
        value.astimezone(timezone.utc).isoformat(), fmt, text)


def format_day(value: datetime | None, fmt: str = "medium") -> str:
    """The date (no time) in the request's locale, e.g. "01.05.2024" / "May 1, 2024"."""
    if value is None:
        return ""
    return format_date(_aware(value).astimezone(timezone.utc).date(), fmt)


def money(minor_units: int | None, currency: str | None) -> str:
    """Format an exact amount: ``money(1250, "chf")`` -> "CHF 12.50" (en) / "12,50 CHF" (de).

    ``minor_units`` is an integer in the currency's minor unit (cents; none for JPY); the
    conversion uses the currency's ISO 4217 precision through ``Decimal``, never a float."""
    code = (currency or "").upper()
    if not code:
        return format_decimal(Decimal(minor_units or 0))
    digits = get_currency_precision(code)
    amount = Decimal(int(minor_units or 0)).scaleb(-digits)
    return format_currency(amount, code)


_BYTE_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")


def quantity(value: float | int | None, unit: str = "") -> str:
    """A number with its unit in the request's locale; bytes are scaled to KiB/MiB/GiB/TiB
    (``quantity(1610612736, "bytes")`` -> "1.5 GiB"). ``None`` -> "unlimited"."""
    if value is None:
        return _("unlimited")
    number = Decimal(str(value))
    if unit == "bytes":
        step = 0
        while abs(number) >= 1024 and step < len(_BYTE_UNITS) - 1:
            number /= 1024
            step += 1
        unit = _BYTE_UNITS[step]
    shown = format_decimal(number.quantize(Decimal("0.01")) if number % 1 else number, format="#,##0.##")
    return f"{shown} {unit}".strip() if unit not in ("count", "") else shown


def init_app(app) -> None:
    """Set up Flask-Babel (catalogs in ``panel/translations``), the filters and the language switch."""
    babel.init_app(app, locale_selector=select_locale, default_translation_directories="translations")
    app.jinja_env.filters["datetime"] = format_when
    app.jinja_env.filters["date"] = format_day
    app.jinja_env.filters["money"] = money
    app.jinja_env.filters["quantity"] = quantity
    app.jinja_env.filters["number"] = lambda v: format_decimal(v)
    from panel.models.invoices import decimal_text

    app.jinja_env.filters["decimal"] = decimal_text
    app.jinja_env.globals["paragraphs"] = escape_text

    from panel.messages import status_label

    app.jinja_env.globals["status_label"] = status_label
    app.register_blueprint(bp)

    @app.before_request
    def _fresh_locale():  # Flask-Babel caches the locale in ``g``; decide it anew per request
        from flask_babel import refresh

        refresh()

    @app.context_processor
    def languages():
        return {"LANGUAGES": LANGUAGES, "current_locale": str(get_locale() or "en")}


@bp.post("/language")
def choose_language():
    """POST /language (``lang``): remember the visitor's language (and the user's, when signed in),
    then go back to the page they came from. CSRF-checked like every form (``CSRFProtect``)."""
    from flask_login import current_user

    lang = request.form.get("lang", "")
    if lang not in LANGUAGES:
        abort(400)
    session["locale"] = lang
    if current_user.is_authenticated:
        from panel.extensions import db

        current_user.locale = lang
        db.session.commit()
    target = request.form.get("next") or ""
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("customer.index")
    return redirect(target)


def escape_text(text: str) -> Markup:
    """Plain text with paragraphs (blank-line separated) as ``<p>`` elements, HTML escaped."""
    parts = [p.strip() for p in str(text or "").replace("\r\n", "\n").split("\n\n") if p.strip()]
    return Markup("").join(Markup("<p>{}</p>").format(escape(p)) for p in parts)

"""Languages: the locale from the user's choice, then Accept-Language; German catalog complete and
compiled; locale-aware money, numbers and dates; the catalogs ship in the wheel."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from corelib import login

from panel.extensions import db

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSLATIONS = os.path.join(ROOT, "panel", "translations")


def test_accept_language_picks_german(client):
    html = client.get("/plans", headers={"Accept-Language": "de-CH,de;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert '<html lang="de">' in html and ">Angebote<" in html and "Zurzeit sind keine Angebote verfügbar." in html
    html = client.get("/plans", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert '<html lang="en">' in html and "No plans are on sale right now." in html


def test_the_users_choice_wins_and_is_kept(client, customer):
    login(client, customer.email)
    r = client.post("/language", data={"lang": "de", "next": "/services"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/services")
    db.session.refresh(customer)
    assert customer.locale == "de"
    html = client.get("/services", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Sie haben noch keine Dienste." in html and 'id="lang-en"' in html
    assert client.post("/language", data={"lang": "xx"}).status_code == 400
    assert client.post("/language", data={"lang": "en", "next": "//evil.example"}).headers["Location"] == "/"


def test_money_numbers_and_quantities_follow_the_locale(app):
    from flask_babel import force_locale

    from panel.i18n import money, quantity

    with app.test_request_context():
        with force_locale("en"):
            assert money(1250, "chf") == "CHF12.50"  # integer minor units, exact
            assert money(500, "JPY") == "¥500"  # a currency without minor units
            assert quantity(1610612736, "bytes") == "1.5 GiB"
            assert quantity(None, "MiB") == "unlimited"
        with force_locale("de_CH"):
            assert money(123456, "CHF") == "CHF\xa01'234.56"
        with force_locale("de"):
            assert money(1250, "EUR") == "12,50\xa0€"
            assert quantity(2.5, "GiB") == "2,5 GiB"
            assert quantity(None, "MiB") == "unbegrenzt"


def test_every_message_has_a_german_translation_and_the_catalog_is_compiled():
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    with open(os.path.join(TRANSLATIONS, "messages.pot"), "rb") as fh:
        template = {m.id for m in read_po(fh) if m.id}
    with open(os.path.join(TRANSLATIONS, "de", "LC_MESSAGES", "messages.po"), "rb") as fh:
        po = {m.id: m.string for m in read_po(fh) if m.id}
    with open(os.path.join(TRANSLATIONS, "de", "LC_MESSAGES", "messages.mo"), "rb") as fh:
        mo = {m.id: m.string for m in read_mo(fh) if m.id}
    assert template - set(po) == set(), "run pybabel update (see panel/i18n.py)"
    assert [k for k, v in po.items() if not v] == []
    assert mo == po, "run pybabel compile -d panel/translations"


def test_the_template_knows_every_message_in_the_code(tmp_path):
    """A fresh extraction finds no message the .pot lacks (so new text cannot skip translation)."""
    from babel.messages.pofile import read_po

    out = tmp_path / "fresh.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg", "-k", "_l",
                    "-k", "lazy_gettext", "-o", str(out), "--no-location", "--omit-header", "."],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    with open(out, "rb") as fh:
        fresh = {m.id for m in read_po(fh) if m.id}
    with open(os.path.join(TRANSLATIONS, "messages.pot"), "rb") as fh:
        known = {m.id for m in read_po(fh) if m.id}
    assert fresh - known == set()


@pytest.mark.slow
def test_the_wheel_ships_the_compiled_catalogs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), ROOT], check=True, capture_output=True, timeout=300)
    wheel = next(p for p in os.listdir(tmp_path) if p.startswith("hostpanel-") and p.endswith(".whl"))
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    assert "panel/translations/de/LC_MESSAGES/messages.mo" in names
    assert "panel/static/favicon.svg" in names

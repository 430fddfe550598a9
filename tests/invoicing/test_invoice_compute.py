"""Invoice computations on a real PostgreSQL database: seed 004's Postiz example (prorated base,
metered posts and storage over a free allowance), seed 002's example (packages toggled mid-month,
4 days suspended, Swiss VAT 8.10 %), the rounding rules and the reverse charge."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from corelib import add_user
from invoicelib import addon_event, pg_app, pg_url, plan, profile, service, usage  # noqa: F401 (fixtures)

from panel.billing import invoicing
from panel.billing.invoicing import InvoiceDraft, LineDraft, compute_month, days_touched, vat_amount
from panel.extensions import db
from panel.models import Invoice

POSTIZ_METERED = {"posts": {"unit_price": "0.01", "currency": "usd"},
                  "storage_gib": {"unit_price": "0.50", "free": 1, "currency": "usd", "aggregate": "max"}}


def lines_of(draft):
    return [(line.kind, line.quantity, line.amount) for line in draft.lines]


def test_seed_004_postiz_full_month_and_joined_on_the_10th(pg_app):
    postiz = plan("postiz", 500, "usd", POSTIZ_METERED)
    full = add_user("full@example.com")
    late = add_user("late@example.com")
    profile(full, company="Full Community", country="US")
    a = service(full, postiz, [("2026-10-03 09:00", "provisioning"), ("2026-10-03 09:05", "active")], "full")
    b = service(late, postiz, [("2026-11-10 14:00", "provisioning"), ("2026-11-10 14:02", "active")], "late")
    # 1,234 posts over the month in daily records (sum); storage sampled, 3.5 GiB at most (max)
    for day in range(1, 31):
        usage(a, "posts", f"2026-11-{day:02d} 23:00", "41" if day <= 29 else "45", day)
        usage(a, "storage_gib", f"2026-11-{day:02d} 23:00", "3.5" if day == 20 else "2.25", day)
    usage(a, "posts", "2026-10-31 23:00", "999", 99)          # October: not this bill
    usage(a, "posts", "2026-12-01 00:00", "999", 98)          # December: not this bill
    usage(b, "posts", "2026-11-12 10:00", "100", 1)
    usage(b, "storage_gib", "2026-11-12 10:00", "0.8", 1)     # under the free GiB
    db.session.commit()

    [da] = compute_month(full, "2026-11")
    assert da.currency == "usd"
    assert lines_of(da) == [("base", Decimal(30), 500), ("metered", Decimal(1234), 1234),
                            ("metered", Decimal("2.5"), 125)]
    assert (da.subtotal, da.vat_rate, da.vat, da.total) == (1859, Decimal("0"), 0, 1859)

    [db_] = compute_month(late, "2026-11")
    # joined on the 10th: 21 of 30 days of $5 = $3.50; 100 posts = $1.00; storage within the free GiB
    assert lines_of(db_) == [("base", Decimal(21), 350), ("metered", Decimal(100), 100)]
    assert db_.total == 450
    assert "21 of 30 days" in db_.lines[0].description


def test_seed_002_packages_toggled_mid_month_and_four_days_suspended(pg_app):
    tenant = plan("tenant", 4900, "chf")
    org = add_user("org@example.com")
    profile(org, company="Org AG", address_line1="Hauptgasse 3", postal_code="3000", city="Bern", country="CH")
    svc = service(org, tenant, [("2026-10-20 08:00", "active"), ("2026-11-10 12:00", "suspended"),
                                ("2026-11-15 08:00", "active")], "org-tenant")
    # searxng: enabled on the 5th at 18:00, disabled on the 20th at 09:00: 16 days touched, 4 suspended
    addon_event(svc, "searxng", "enabled", "2026-11-05 18:00", 300, "chf")
    addon_event(svc, "searxng", "disabled", "2026-11-20 09:00", 300, "chf")
    # threema: enabled 23:30 on the 28th, counts the 28th (day collapse), 29th and 30th
    addon_event(svc, "threema", "enabled", "2026-11-28 23:30", 1000, "chf")
    db.session.commit()

    [draft] = compute_month(org, "2026-11")
    assert lines_of(draft) == [
        ("base", Decimal(26), 4247),     # 49.00 * 26/30 = 42.4666.. -> 42.47
        ("addon", Decimal(12), 120),     # 3.00 * 12/30
        ("addon", Decimal(3), 100),      # 10.00 * 3/30
    ]
    assert "4 days suspended" in draft.lines[0].description
    assert draft.subtotal == 4467
    assert draft.vat_rate == Decimal("8.10")
    assert draft.vat == 362              # 44.67 * 8.1 % = 3.61827 -> 3.62, once per invoice
    assert draft.total == 4829

    # December: active all month, threema still on, searxng off
    [dec] = compute_month(org, "2026-12")
    assert lines_of(dec) == [("base", Decimal(31), 4900), ("addon", Decimal(31), 1000)]


def test_vat_is_rounded_once_per_invoice_and_lines_half_up(app):
    # three lines of 0.06 CHF: 8.1 % per line would round each 0.00486 to 0; per invoice 0.18 -> 0.01458 -> 0.01
    user = add_user("round@example.com")
    draft = InvoiceDraft(user=user, period_start=date(2026, 11, 1), period_end=date(2026, 11, 30),
                         currency="chf", vat_rate=Decimal("8.10"),
                         lines=[LineDraft("base", "x", Decimal(1), "day", Decimal("0.06"), 6, "chf")] * 3)
    assert (draft.subtotal, draft.vat, draft.total) == (18, 1, 19)
    assert vat_amount(1859, Decimal("8.10")) == 151      # 150.579 -> 151
    assert vat_amount(3395, Decimal("8.10")) == 275      # 274.995 -> 275 (half up, not to even)
    assert invoicing.round_minor(Decimal("2.5")) == 3 and invoicing.round_minor(Decimal("3.5")) == 4
    assert invoicing._prorated(4900, 26, 30) == 4247 and invoicing._prorated(500, 1, 30) == 17


def test_vat_by_country_and_reverse_charge(app):
    assert invoicing.vat_for("CH", "") == (Decimal("8.10"), "")
    assert invoicing.vat_for("li", "") == (Decimal("8.10"), "")
    assert invoicing.vat_for("DE", "DE136695976") == (Decimal("0"), invoicing.REVERSE_CHARGE)
    assert invoicing.vat_for("DE", "DE136695975") == (Decimal("0"), "")     # bad check digit: no reverse charge
    assert invoicing.vat_for("DE", "136695976") == (Decimal("0"), invoicing.REVERSE_CHARGE)   # stored without DE
    assert invoicing.vat_for("DE", "FR40303265045") == (Decimal("0"), "")   # another country's number
    assert invoicing.vat_for("US", "") == (Decimal("0"), "")
    app.config["INVOICE_VAT_RATES"] = "CH:8.1,DE:19"
    assert invoicing.vat_for("DE", "") == (Decimal("19"), "")


def test_day_collapse():
    from invoicelib import at
    days = days_touched([(at("2026-11-30 23:59"), None)], date(2026, 11, 1), date(2026, 11, 30))
    assert days == {date(2026, 11, 30)}
    days = days_touched([(at("2026-10-01 00:00"), at("2026-11-02 00:00"))], date(2026, 11, 1), date(2026, 11, 30))
    assert days == {date(2026, 11, 1)}          # ending at midnight does not touch the 2nd


def test_generate_issues_once_per_account_and_month(pg_app):
    tenant = plan("tenant", 4900, "chf")
    org = add_user("gen@example.com")
    profile(org, company="Gen AG", country="CH")
    service(org, tenant, [("2026-10-20 08:00", "active")], "gen")
    free_user = add_user("nobody@example.com")
    db.session.commit()
    dry = invoicing.generate("2026-11", dry_run=True)
    assert [d.total for d in dry.drafts] == [4900 + 397] and not dry.issued
    assert db.session.scalar(db.select(db.func.count(Invoice.id))) == 0
    result = invoicing.generate("2026-11")
    [inv] = result.issued
    assert inv.number.endswith("-000001") and inv.total == 5297 and inv.buyer["name"] == "Gen AG"
    assert inv.payment_reference.startswith("RF")
    from stdnum import iso11649
    assert iso11649.is_valid(inv.payment_reference)
    again = invoicing.generate("2026-11")
    assert not again.issued and "already has invoice" in again.skipped[0]
    assert invoicing.generate("2026-11", email=free_user.email).drafts == []
    with pytest.raises(invoicing.InvoiceError):
        invoicing.generate("2026-13")


def test_catalog_metered_block(app):
    from panel.catalog import CatalogError, import_catalog
    from panel.models import Plan

    good = """
plans:
  - slug: postiz
    name: Postiz
    backend: memory
    options: {size_mib: 64}
    metered:
      posts: {unit_price: "0.01", currency: USD, meter: postiz_posts}
      storage_gib: {unit_price: "0.50", free: 1, currency: usd, aggregate: max}
"""
    import_catalog(good)
    assert Plan.by_slug("postiz").metered == {
        "posts": {"unit_price": "0.01", "currency": "usd", "aggregate": "sum", "meter": "postiz_posts"},
        "storage_gib": {"unit_price": "0.50", "free": "1", "currency": "usd", "aggregate": "max"}}
    bad = good.replace('"0.01"', "0.01").replace("aggregate: max", "aggregate: avg").replace("USD", "dollars")
    with pytest.raises(CatalogError) as err:
        import_catalog(bad)
    text = "\n".join(err.value.errors)
    assert "postiz: metered.posts.unit_price: write it as a quoted decimal" in text
    assert "metered.posts.currency: must be an ISO 4217 code" in text
    assert "metered.storage_gib.aggregate: must be sum or max" in text

"""One OS process issuing invoices at the same time as others (tests/invoicing/test_numbering.py).

``python issue_worker.py DATABASE_URL USER_ID COUNT GO_FILE``: waits until GO_FILE exists, then
issues COUNT invoices of user USER_ID (one line each, periods in 2026 by month offset); every
third one is rolled back after its number was allocated. Prints one line per issue:
``committed NUMBER`` or ``rolledback NUMBER``.
"""
import os
import sys
import time
from datetime import date, datetime, timezone
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(url, user_id, count, go_file):
    from corelib import BASE_CONFIG

    from panel import create_app
    from panel.billing.invoicing import InvoiceDraft, LineDraft, issue
    from panel.extensions import db
    from panel.models import User

    app = create_app(BASE_CONFIG | {"DATABASE_URL": url, "PLUGINS": []})
    with app.app_context():
        user = db.session.get(User, int(user_id))
        deadline = time.monotonic() + 60
        while not os.path.exists(go_file) and time.monotonic() < deadline:
            time.sleep(0.01)
        for n in range(int(count)):
            draft = InvoiceDraft(user=user, period_start=date(2000 + n, 1, 1), period_end=date(2000 + n, 1, 31),
                                 currency="chf", vat_rate=Decimal("8.10"),
                                 lines=[LineDraft("base", "line", Decimal(1), "month", Decimal("10"), 1000, "chf")])
            invoice = issue(draft, actor=f"worker-{user_id}", now=datetime(2026, 12, 1, tzinfo=timezone.utc))
            number = invoice.number
            time.sleep(0.02)  # hold the counter lock a moment so the others queue behind it
            if n % 3 == 2:
                db.session.rollback()
                print("rolledback", number, flush=True)
            else:
                db.session.commit()
                print("committed", number, flush=True)
        db.session.remove()
        db.engine.dispose()


if __name__ == "__main__":
    main(*sys.argv[1:])

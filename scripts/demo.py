"""Run the panel with its demo: SQLite, in-process jobs, and a local STAND-IN of the PDS deploy API.

Used by ``scripts/demo``. It:
1. starts the PDS deploy API stand-in (panel_pds.standin) on 127.0.0.1 (nothing real is deployed);
2. creates/upgrades the SQLite database in instance/demo.db;
3. configures and enables the ``pds`` backend to talk to the stand-in;
4. creates a demo operator and a demo customer, and imports the example catalog;
5. serves the panel at http://127.0.0.1:5000 with jobs running in-process (no Redis).
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OPERATOR = ("operator@demo.hostpanel.dev", "demo-operator")
CUSTOMER = ("customer@demo.hostpanel.dev", "demo-customer")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--standin-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--standin-latency-ms", type=int, default=1500,
                        help="delay of each stand-in answer, so you can watch 'provisioning'")
    parser.add_argument("--keep", action="store_true",
                        help="keep instance/demo.db from the last run (the stand-in forgets its "
                             "services when it stops, so their details will say they are gone)")
    args = parser.parse_args(argv)
    demo_db = os.path.join(ROOT, "instance", "demo.db")
    if not args.keep and "PANEL_DATABASE_URL" not in os.environ:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(demo_db + suffix):
                os.remove(demo_db + suffix)

    from panel_pds.standin import PdsStandIn

    token = secrets.token_urlsafe(24)
    standin = PdsStandIn(port=args.standin_port, token=token, latency_ms=args.standin_latency_ms).start()

    os.environ.setdefault("PANEL_DEMO", "true")
    os.environ.setdefault("PANEL_DATABASE_URL", "sqlite:///" + demo_db)
    os.environ.setdefault("PANEL_PUBLIC_URL", f"http://{args.host}:{args.port}")
    os.makedirs(os.path.join(ROOT, "instance"), exist_ok=True)

    from flask_migrate import upgrade

    from panel import create_app, dispatch
    from panel.catalog import import_catalog
    from panel.extensions import db
    from panel.models import User
    from panel.plugins import set_enabled, set_setting

    app = create_app()
    with app.app_context():
        upgrade(directory=os.path.join(ROOT, "migrations"))
        set_setting("pds", "api_url", standin.url)
        set_setting("pds", "api_token", token)
        set_setting("pds", "hostname_domain", "pds.demo.hostpanel.dev")
        set_enabled("pds", True)
        for (email, password), role in ((OPERATOR, "operator"), (CUSTOMER, "customer")):
            user = User.by_email(email) or User(email=email)
            user.role = role
            user.set_password(password)
            db.session.add(user)
        db.session.commit()
        with open(os.path.join(ROOT, "panel", "examples", "catalog.yaml"), encoding="utf-8") as fh:
            import_catalog(fh.read())
        dispatch.sweep()  # pick up anything a previous run left unfinished
    dispatch.start_periodic(app)

    print(f"""
  hostpanel demo
  --------------
  Panel:     http://{args.host}:{args.port}
  Operator:  {OPERATOR[0]} / {OPERATOR[1]}
  Customer:  {CUSTOMER[0]} / {CUSTOMER[1]}   (or sign up)
  PDS deploy API: a local STAND-IN at {standin.url} (not a real PDS host; nothing is deployed)
  Jobs run in-process (no Redis). Database: {app.config['SQLALCHEMY_DATABASE_URI']}
  Paid plans answer "billing not configured" until Stripe is set up (see README).
""", flush=True)
    try:
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""WSGI entry point of an installed panel: ``gunicorn panel.wsgi:app`` (configuration from
``PANEL_*`` environment variables). The one module that builds the app at import time."""
from panel import create_app

app = create_app()

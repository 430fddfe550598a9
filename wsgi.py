"""WSGI entry point: ``gunicorn wsgi:app`` (configuration from ``PANEL_*`` environment variables)."""
from panel import create_app

app = create_app()

"""WSGI entry point from a source checkout: ``gunicorn wsgi:app`` (same as ``panel.wsgi:app``)."""
from panel.wsgi import app  # noqa: F401

"""The operator's console: every service, operation and failure, with retry."""
from flask import Blueprint

bp = Blueprint("admin", __name__)

from panel.admin import routes  # noqa: E402,F401
from panel.admin import invoices  # noqa: E402,F401
from panel.admin import console  # noqa: E402,F401  (doctor, reconcile, settings, service tools)

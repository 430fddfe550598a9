"""JSON API v1 with personal bearer tokens (``panel tokens create EMAIL``)."""
from flask import Blueprint

bp = Blueprint("api", __name__)

from panel.api import routes  # noqa: E402,F401
from panel.api import invoices  # noqa: E402,F401

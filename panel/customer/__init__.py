"""The customer's pages: plans, order form, services, service page."""
from flask import Blueprint

bp = Blueprint("customer", __name__)

from panel.customer import routes  # noqa: E402,F401

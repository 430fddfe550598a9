"""hostpanel: a Flask control panel that sells hosted services and runs them through backend plugins.

Plugin authors import ``hookimpl``, ``Backend``, ``Schema`` (the base of their pydantic schemas) and
the value types from here; ``Field`` and ``SecretStr`` come from pydantic itself.
"""
from panel.backends import (Backend, InProgress, Metric, NoCapacityError, NotSupportedError, PermanentBackendError,
                            Provisioned, Resource, Schema, Secret, ServiceSpec, TransientBackendError, Usage,
                            ValidationError)
from panel.hookspecs import hookimpl
from panel.backends import (Action, ActionResult, Connect, ConnectItem, Credential,  # noqa: E402
                            Credentials, HowTo, Limit, Link, Links, Resources)
from panel.backends import BillableMetric, billable  # noqa: E402

__all__ = ["create_app", "hookimpl", "Backend", "InProgress", "Metric", "NoCapacityError", "NotSupportedError",
           "PermanentBackendError", "Provisioned", "Resource", "Schema", "Secret", "ServiceSpec",
           "TransientBackendError", "Usage", "ValidationError"]
__all__ += ["Action", "ActionResult", "Connect", "ConnectItem", "Credential", "Credentials", "HowTo",
            "Limit", "Link", "Links", "Resources"]
__all__ += ["BillableMetric", "billable"]


def create_app(config=None):
    """Build the Flask app (see ``panel.app.create_app``)."""
    from panel.app import create_app as _create_app

    return _create_app(config)

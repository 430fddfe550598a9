"""Billing (Stripe). Until Stripe is configured, paid plans cannot be ordered."""


def init_app(app) -> None:
    """Register billing routes when present."""


def configured(app=None) -> bool:
    """Whether Stripe billing is configured (``PANEL_STRIPE_SECRET_KEY`` set)."""
    from flask import current_app

    return bool((app or current_app).config.get("STRIPE_SECRET_KEY"))

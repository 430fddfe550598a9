"""The one place that talks to the Stripe API (stripe SDK ``StripeClient``).

Every call returns plain ``dict`` objects (``StripeObject.to_dict()``), and every SDK failure
becomes a ``BillingAPIError`` whose message is safe to show and to log: no API key, no request
body. ``BillingAPIError.transient`` tells a retryable failure (network, 5xx, 429) from a
rejection (4xx).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from flask import current_app

# ``stripe`` is imported where it is used (a web worker that never calls Stripe does not load the
# SDK, about 15-30 MB), not at the top of this module.

log = logging.getLogger(__name__)
_LOCK = threading.Lock()


class BillingAPIError(Exception):
    """A Stripe API call failed. ``status`` is Stripe's HTTP status (``None``: no answer),
    ``code`` Stripe's error code (e.g. ``resource_missing``), ``transient`` whether a retry may
    succeed. The message never contains a secret."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 transient: bool = False):
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = transient


def client(app=None) -> "stripe.StripeClient":
    """The app's ``stripe.StripeClient`` (one per app and key), pointed at
    ``PANEL_STRIPE_API_BASE`` when set. Raises ``BillingAPIError`` when no key is configured."""
    app = app or current_app._get_current_object()
    key = app.config.get("STRIPE_SECRET_KEY")
    if not key:
        raise BillingAPIError("Stripe is not configured (PANEL_STRIPE_SECRET_KEY is not set)")
    ext = app.extensions.setdefault("panel_billing", {})
    cache_key = ("client", key, app.config.get("STRIPE_API_BASE"))
    with _LOCK:
        found = ext.get("client")
        if found is None or found[0] != cache_key:
            import stripe

            base = app.config.get("STRIPE_API_BASE")
            kwargs: dict[str, Any] = {"max_network_retries": 2}
            if base:
                kwargs["base_addresses"] = {"api": base}
            found = (cache_key, stripe.StripeClient(key, **kwargs))
            ext["client"] = found
    return found[1]


def _scrub(text: str) -> str:
    try:
        for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
            secret = current_app.config.get(name)
            if secret:
                text = text.replace(str(secret), "[secret]")
    except RuntimeError:  # no app context
        pass
    return text


def _wrap(exc: "stripe.StripeError", what: str) -> BillingAPIError:
    import stripe

    status = getattr(exc, "http_status", None)
    code = getattr(exc, "code", None)
    if isinstance(exc, stripe.AuthenticationError):
        return BillingAPIError(f"{what}: Stripe refused our API key (check PANEL_STRIPE_SECRET_KEY)",
                               status=status, code=code)
    if isinstance(exc, stripe.APIConnectionError):
        return BillingAPIError(f"{what}: Stripe could not be reached", status=None, code=code,
                               transient=True)
    if isinstance(exc, stripe.RateLimitError) or (status is not None and status >= 500):
        return BillingAPIError(f"{what}: Stripe is unavailable (HTTP {status})", status=status,
                               code=code, transient=True)
    message = getattr(exc, "user_message", None) or str(getattr(exc, "_message", "") or "") or type(exc).__name__
    return BillingAPIError(_scrub(f"{what}: {message}")[:500], status=status, code=code)


def call(what: str, fn, *args, **kwargs) -> dict:
    """Run ``fn(*args, **kwargs)`` (a ``StripeClient`` service method) and return a plain dict.

    ``what`` names the call for messages ("create the checkout session"). Raises
    ``BillingAPIError``.
    """
    import stripe

    try:
        result = fn(*args, **kwargs)
    except stripe.StripeError as exc:
        err = _wrap(exc, what)
        log.warning("Stripe call failed: %s", err)
        raise err from None
    if hasattr(result, "to_dict"):
        return result.to_dict()
    return dict(result)


# --------------------------------------------------------------------------- helpers on shapes

def item_of(subscription: dict) -> dict:
    """The first subscription item of a Stripe subscription (``{}`` when there is none)."""
    items = (subscription.get("items") or {}).get("data") or []
    return items[0] if items else {}


def item_price(item: dict) -> str | None:
    """The price id of a subscription item (``price.id``; localstripe and old API versions only
    have ``plan.id``)."""
    for key in ("price", "plan"):
        value = (item or {}).get(key)
        if isinstance(value, dict) and value.get("id"):
            return value["id"]
        if isinstance(value, str) and value:
            return value
    return None


def price_of(subscription: dict, plan_prices: set[str] | None = None) -> str | None:
    """The price id of a subscription's plan item: the first item whose price is in
    ``plan_prices`` (a plan's price, not an add-on's), else the first item's."""
    items = (subscription.get("items") or {}).get("data") or []
    if plan_prices:
        for item in items:
            if item_price(item) in plan_prices:
                return item_price(item)
    return item_price(items[0]) if items else None


def period_end_of(subscription: dict) -> int | None:
    """``current_period_end`` (Unix seconds): on the item since API 2025-03-31, on the
    subscription before."""
    return item_of(subscription).get("current_period_end") or subscription.get("current_period_end")


def invoice_subscription(invoice: dict) -> tuple[str | None, dict]:
    """The subscription id and subscription metadata an invoice belongs to.

    Newer API versions put them in ``parent.subscription_details``; older ones in
    ``subscription`` and ``subscription_details``.
    """
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or invoice.get("subscription_details") or {}
    sub = details.get("subscription") or invoice.get("subscription")
    if isinstance(sub, dict):
        sub = sub.get("id")
    return sub, dict(details.get("metadata") or {})

"""Billing configuration: ``PANEL_STRIPE_*`` and the dunning / retention periods.

Variables (``PANEL_`` prefix in the environment, without it in ``app.config``):

* ``PANEL_STRIPE_SECRET_KEY``: Stripe secret or restricted key (``sk_...`` / ``rk_...``).
  Unset: billing is off and paid plans cannot be ordered.
* ``PANEL_STRIPE_WEBHOOK_SECRET``: the endpoint's signing secret (``whsec_...``); required
  when the secret key is set.
* ``PANEL_STRIPE_API_BASE``: base URL of the Stripe API (default ``https://api.stripe.com``),
  e.g. a localstripe on ``http://127.0.0.1:8420``.
* ``PANEL_STRIPE_WEBHOOK_TOLERANCE``: seconds a signature timestamp stays valid (default 300).
* ``PANEL_PENDING_PAYMENT_HOURS``: an unpaid order is cancelled after this many hours (default 24).
* ``PANEL_SUSPEND_AFTER_DAYS``: days of grace after a failed payment before suspension (default 3).
* ``PANEL_TERMINATE_AFTER_DAYS``: days between the end of a subscription and termination (default 14).
* ``PANEL_BILLING_CRON_INTERVAL``: seconds between the billing cron's runs in ``panel worker``
  (default 60).
* ``PANEL_BILLING_ESTIMATE_CACHE_SECONDS``: how long a process keeps a subscription's projected
  charge (Stripe's upcoming invoice) before asking Stripe again (default 300; 0: every view).
* ``PANEL_STRIPE_TAX``: ``1`` turns on Stripe Tax in Checkout (``automatic_tax``, billing address
  and tax ID collection; the customer's profile address and tax ID go to the Stripe customer).
* ``PANEL_STRIPE_TAX_BEHAVIOR``: ``exclusive`` (default) or ``inclusive``: what a price whose
  ``tax_behavior`` is ``unspecified`` means, for the "excl. tax" / "incl. tax" labels.
* ``PANEL_STRIPE_PROMOTION_CODES``: ``1`` lets customers enter promotion codes in Checkout.
* ``PANEL_TERMINATE_REFUND``: what ending a paid service early gives back when no operator chose:
  ``none`` (default), ``credit`` (the unused time, prorated, as credit on the customer's Stripe
  balance) or ``refund`` (the unused time refunded to the card through a credit note).
* ``PANEL_FAILED_ORDER_REFUND``: what a paid order whose provisioning failed and that was then
  cancelled gives back: ``refund`` (default: the whole payment), ``credit`` or ``none``.
"""
from __future__ import annotations

from urllib.parse import urlparse

from panel.config import ConfigError

DEFAULTS = {
    "STRIPE_SECRET_KEY": None,
    "STRIPE_WEBHOOK_SECRET": None,
    "STRIPE_API_BASE": None,
    "STRIPE_WEBHOOK_TOLERANCE": 300,
    "PENDING_PAYMENT_HOURS": 24,
    "SUSPEND_AFTER_DAYS": 3,
    "TERMINATE_AFTER_DAYS": 14,
    "BILLING_CRON_INTERVAL": 60,
    "BILLING_ESTIMATE_CACHE_SECONDS": 300,
    "STRIPE_TAX": False,
    "STRIPE_TAX_BEHAVIOR": "exclusive",
    "STRIPE_PROMOTION_CODES": False,
    "TERMINATE_REFUND": "none",
    "FAILED_ORDER_REFUND": "refund",
}

REFUND_MODES = ("none", "credit", "refund")


def _flag(cfg, name: str) -> bool:
    value = cfg.get(name)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"PANEL_{name} must be 1 or 0 (got {value!r})")


def _choice(cfg, name: str, choices: tuple[str, ...]) -> str:
    value = str(cfg.get(name)).strip().lower()
    if value not in choices:
        raise ConfigError(f"PANEL_{name} must be one of {', '.join(choices)} (got {cfg.get(name)!r})")
    return value


def _number(cfg, name: str, *, minimum: float = 0) -> float:
    value = cfg.get(name)
    try:
        number = float(value)
        if number < minimum or number != number:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"PANEL_{name} must be a number >= {minimum:g} (got {value!r})") from None
    return int(number) if number == int(number) else number


def load(app) -> None:
    """Fill in billing defaults and validate; raises ``ConfigError`` naming the variable.

    Secret values are never part of an error message.
    """
    cfg = app.config
    for key, value in DEFAULTS.items():
        if cfg.get(key) in (None, ""):
            cfg[key] = value
    key = cfg.get("STRIPE_SECRET_KEY")
    if key is not None:
        key = str(key).strip()
        if not key.startswith(("sk_", "rk_")):
            raise ConfigError("PANEL_STRIPE_SECRET_KEY must be a Stripe secret key (sk_...) or "
                              "restricted key (rk_...)")
        cfg["STRIPE_SECRET_KEY"] = key
        if not str(cfg.get("STRIPE_WEBHOOK_SECRET") or "").strip():
            raise ConfigError("PANEL_STRIPE_WEBHOOK_SECRET is not set: copy the signing secret "
                              "(whsec_...) of the webhook endpoint that points at /stripe/webhook")
    if cfg.get("STRIPE_WEBHOOK_SECRET") is not None:
        cfg["STRIPE_WEBHOOK_SECRET"] = str(cfg["STRIPE_WEBHOOK_SECRET"]).strip()
    base = cfg.get("STRIPE_API_BASE")
    if base:
        parsed = urlparse(str(base))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"PANEL_STRIPE_API_BASE must be an absolute http(s) URL (got {base!r})")
        cfg["STRIPE_API_BASE"] = str(base).rstrip("/")
    cfg["STRIPE_WEBHOOK_TOLERANCE"] = _number(cfg, "STRIPE_WEBHOOK_TOLERANCE", minimum=1)
    cfg["PENDING_PAYMENT_HOURS"] = _number(cfg, "PENDING_PAYMENT_HOURS", minimum=0.5)
    cfg["SUSPEND_AFTER_DAYS"] = _number(cfg, "SUSPEND_AFTER_DAYS")
    cfg["TERMINATE_AFTER_DAYS"] = _number(cfg, "TERMINATE_AFTER_DAYS")
    cfg["BILLING_CRON_INTERVAL"] = _number(cfg, "BILLING_CRON_INTERVAL", minimum=1)
    cfg["BILLING_ESTIMATE_CACHE_SECONDS"] = _number(cfg, "BILLING_ESTIMATE_CACHE_SECONDS")
    cfg["STRIPE_TAX"] = _flag(cfg, "STRIPE_TAX")
    cfg["STRIPE_PROMOTION_CODES"] = _flag(cfg, "STRIPE_PROMOTION_CODES")
    cfg["STRIPE_TAX_BEHAVIOR"] = _choice(cfg, "STRIPE_TAX_BEHAVIOR", ("exclusive", "inclusive"))
    cfg["TERMINATE_REFUND"] = _choice(cfg, "TERMINATE_REFUND", REFUND_MODES)
    cfg["FAILED_ORDER_REFUND"] = _choice(cfg, "FAILED_ORDER_REFUND", REFUND_MODES)

"""Names that belong to the customer.

* **Hostnames the customer brings.** An order param a backend lists in ``hostname_params`` (PDS:
  ``hostname``) whose value is outside the operator's own domains (``PANEL_OWN_DOMAINS`` plus
  ``Backend.own_domains()``) can be ordered only once the customer proved control of it with a DNS
  TXT record: ``_hostpanel-challenge.<hostname>`` = ``hostpanel-verification=<token>``
  (``DomainVerification``). The worker checks pending ones every ``PANEL_DOMAIN_CHECK_INTERVAL``
  seconds (``check_pending``); the customer can also press "Check now"; ``panel domains check``
  runs it once. DNS is asked through dnspython (``PANEL_DNS_RESOLVERS``, or the system's).
* **Default names under the operator's domains.** The name a customer gets when they leave the
  field empty (``Backend.claim_key`` of an order without params, e.g. PDS
  ``<email local part>.<hostname_domain>``) is reserved for them: another customer cannot order it.
* **No silent rewriting.** ``rewrites`` tells which values the backend would change
  ("Jürgen Müller" -> ``j-rgen-m-ller``); the order form shows "will be ..." and asks before it
  orders (``preview`` answers the page's script while the customer types).
"""
from __future__ import annotations

import logging
import re
from datetime import timedelta

from flask import current_app
from flask_babel import gettext as _

from panel.backends import BackendError, ServiceSpec
from panel.extensions import db
from panel.models import DomainVerification, User
from panel.models.base import utcnow

log = logging.getLogger(__name__)

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: pending verifications older than this are no longer checked by the worker (still by "Check now")
CHECK_FOR_DAYS = 14


class NameError_(ValueError):
    """A hostname that cannot be used; the message is field-level and for the customer."""


def clean_hostname(value: str) -> str:
    """A bare, lower-case FQDN (IDN as punycode) or ``NameError_`` with a plain message."""
    text = str(value or "").strip().lower().rstrip(".")
    if "://" in text or "/" in text or ":" in text or " " in text:
        raise NameError_(_("Enter only the host name, like pds.example.org (no https://, path or port)."))
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise NameError_(_("This is not a valid international domain name.")) from None
    labels = text.split(".")
    if len(labels) < 2 or len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise NameError_(_("Enter a full host name like pds.example.org (letters, digits and '-').")) from None
    return text


def own_domains(backend) -> list[str]:
    """``PANEL_OWN_DOMAINS`` plus the backend's own (e.g. PDS's ``hostname_domain``), lower case."""
    domains = list(current_app.config.get("OWN_DOMAINS") or [])
    try:
        domains += [str(d).lower().strip(".") for d in (backend.own_domains() or ()) if d]
    except Exception:  # a backend bug must not make every hostname "foreign"
        log.exception("%s.own_domains failed", getattr(backend, "name", "?"))
    return sorted(set(domains))


def under(hostname: str, domains: list[str]) -> bool:
    """Whether ``hostname`` is one of ``domains`` or below one of them."""
    return any(hostname == d or hostname.endswith("." + d) for d in domains)


def needs_verification(backend, param: str, value: str) -> bool:
    """Whether ``value`` of order param ``param`` is a hostname outside the operator's domains."""
    return param in (getattr(backend, "hostname_params", ()) or ()) and "." in str(value) \
        and not under(str(value).lower(), own_domains(backend))


def verification_for(user: User, hostname: str) -> DomainVerification | None:
    """The user's verification row for ``hostname``, if any."""
    return db.session.scalar(db.select(DomainVerification).where(DomainVerification.user_id == user.id,
                                                                 DomainVerification.hostname == hostname))


def is_verified(user: User, hostname: str) -> bool:
    """Whether ``user`` proved control of ``hostname``."""
    row = verification_for(user, hostname)
    return row is not None and row.status == "verified"


def _draft(plan, user: User, params: dict) -> ServiceSpec:
    return ServiceSpec(service_id=0, external_id="", plan=plan.slug, options=dict(plan.options or {}),
                       params=dict(params), customer_id=user.id, customer_email=user.email)


def default_claim(backend, plan, user: User) -> str | None:
    """The name ``user`` gets with an empty order (``claim_key`` without params), or ``None``."""
    try:
        claim = backend.claim_key(_draft(plan, user, {}))
    except BackendError:
        return None
    except Exception:  # a backend that needs params for a name has no default
        log.debug("%s.claim_key has no default name", backend.name, exc_info=True)
        return None
    return claim[1] if claim else None


def reserved_for_other(backend, plan, value: str, user: User) -> bool:
    """Whether ``value`` is another account's default name (and not also ``user``'s own).

    Candidates are the accounts whose email local part could normalise to the name's first
    label (a LIKE match, at most 50); each one's default is computed by the backend."""
    if default_claim(backend, plan, user) == value:
        return False
    label = str(value).split(".", 1)[0].lower()
    if not _LABEL.fullmatch(label):
        return False
    pattern = label.replace("-", "%")
    email = db.func.lower(User.email)
    candidates = db.session.scalars(
        db.select(User).where(User.id != user.id,
                              db.or_(email.like(f"{pattern}@%"), email.like(f"{pattern}+%@%")))
        .limit(50)).all()
    return any(default_claim(backend, plan, other) == value for other in candidates)


def check_claim(backend, plan, claim: tuple[str, str], user: User) -> dict[str, str]:
    """Field-level problems (``{param: message}``) with the name an order would take: a foreign
    hostname that is not verified, or another customer's default name. ``{}`` when it is fine."""
    param, value = claim
    if needs_verification(backend, param, value):
        if not is_verified(user, str(value).lower()):
            return {param: _("%(name)s is not verified yet: add the DNS record shown on the Domains page, "
                             "then order again.", name=value)}
        return {}
    if reserved_for_other(backend, plan, value, user):
        return {param: _("%(name)s belongs to another account; choose another name.", name=value)}
    return {}


def rewrites(schema, raw: dict, clean: dict) -> dict[str, str]:
    """The string params the backend changed beyond case and spaces: ``{name: new value}``."""
    out = {}
    for f in schema:
        before, after = raw.get(f.name), clean.get(f.name)
        if isinstance(before, str) and isinstance(after, str) and before.strip() \
                and before.strip().lower() != after.lower():
            out[f.name] = after
    return out


def will_be(value: str) -> str:
    """The note shown at a field whose value the backend rewrites."""
    return _("Not every character can be used here: it will be “%(value)s”. Order again to accept it, "
             "or type another.", value=value)


# --------------------------------------------------------------------------- DNS TXT verification

def start(user: User, hostname: str) -> DomainVerification:
    """The (new or existing) verification of ``hostname`` for ``user``; commits. Raises
    ``NameError_`` for a bad hostname or one under the operator's own domains."""
    hostname = clean_hostname(hostname)
    if under(hostname, list(current_app.config.get("OWN_DOMAINS") or [])):
        raise NameError_(_("%(name)s is one of ours: no verification is needed.", name=hostname))
    row = verification_for(user, hostname)
    if row is None:
        row = DomainVerification(user_id=user.id, hostname=hostname)
        db.session.add(row)
        db.session.commit()
    return row


def _resolver():
    import dns.resolver

    servers = current_app.config.get("DNS_RESOLVERS") or []
    resolver = dns.resolver.Resolver(configure=not servers)
    if servers:
        resolver.nameservers = [host for host, _port in servers]
        resolver.nameserver_ports = {host: port for host, port in servers}
    resolver.lifetime = 5.0
    resolver.timeout = 2.0
    return resolver


def txt_values(name: str) -> list[str]:
    """Every TXT string at ``name`` (the character strings of one record joined). Raises
    ``LookupError`` with a plain reason when there is no such record or DNS did not answer."""
    import dns.exception
    import dns.resolver

    try:
        answer = _resolver().resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        raise LookupError(_("No TXT record was found at %(name)s yet.", name=name)) from None
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout):
        raise LookupError(_("DNS did not answer for %(name)s; we try again later.", name=name)) from None
    except dns.exception.DNSException as exc:
        raise LookupError(_("DNS lookup failed (%(error)s); we try again later.", error=type(exc).__name__)) from None
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def check(row: DomainVerification) -> bool:
    """Look the TXT record up once; marks the row ``verified`` when it holds the value. Commits."""
    row.checks = (row.checks or 0) + 1
    row.checked_at = utcnow()
    try:
        values = txt_values(row.record_name)
    except LookupError as exc:
        row.last_error = str(exc)
        db.session.commit()
        return False
    if row.record_value in [v.strip() for v in values]:
        row.status = "verified"
        row.verified_at = utcnow()
        row.last_error = None
        db.session.commit()
        log.info("hostname %s verified for user %s", row.hostname, row.user_id)
        return True
    row.last_error = _("A TXT record exists at %(name)s, but none holds the value shown here.", name=row.record_name)
    db.session.commit()
    return False


def check_pending(now=None) -> int:
    """Check every pending verification made in the last ``CHECK_FOR_DAYS`` days; returns how many
    became verified. Run by ``panel worker`` every ``PANEL_DOMAIN_CHECK_INTERVAL`` seconds."""
    now = now or utcnow()
    rows = db.session.scalars(db.select(DomainVerification).where(
        DomainVerification.status == "pending",
        DomainVerification.created_at >= now - timedelta(days=CHECK_FOR_DAYS))).all()
    done = 0
    for row in rows:
        try:
            done += bool(check(row))
        except Exception:  # one broken row never stops the others
            db.session.rollback()
            log.exception("checking the DNS record of %s failed", row.hostname)
    return done

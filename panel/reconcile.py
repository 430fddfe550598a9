"""``panel reconcile NAME``: compare a backend's remote objects with our records.

Drift kinds:

* ``missing``: we think the service is active or suspended, the backend has nothing for it.
  Fix: the service goes to ``failed`` (an operator's retry rebuilds it).
* ``suspended-remote`` / ``suspended-local``: suspended on one side only. Fix: request the
  suspend or unsuspend that makes the remote side match our record.
* ``unknown``: a remote object no service of ours accounts for (an orphan: never deleted
  automatically, an operator decides).
* ``terminated-remote``: we terminated it, it still exists.
* ``needs-reconcile``: a provision ended without knowing what the backend made; the report says
  whether the backend has it (an operator's retry adopts it; terminate deletes it).
* ``failed-remote``: active here, failed on the backend (a Pterodactyl install that failed, a custom
  resource ``Ready=False``, a dead container). Fix: the service goes to ``failed`` with the remote
  reason; an operator's Retry runs provision, which adopts the object and reports what it finds.

``adopt(NAME)`` (``panel reconcile NAME --adopt``) makes service records for the ``unknown`` objects
(and, where the backend can list them, objects the panel did not make: ``list_unmanaged``): the
customer comes from a mapping file or the object's own email, the plan from the mapping, the
operator or the object's resources; the event log is backfilled from the remote state (seed 002).

Remote objects are matched to services by external id, then by the remote id we recorded
(``resource_id``), then by the remote name a live service holds (``claim_key``, e.g. a PDS
hostname), for backends whose objects cannot carry our external id.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from panel import lifecycle
from panel.extensions import db
from panel.models import Service
from panel.plugins import get_backend


@dataclass
class Drift:
    """One difference between a backend and our records, and what was done about it."""
    kind: str
    external_id: str
    service_id: int | None
    detail: str
    fixed: str = ""


@dataclass
class ReconcileReport:
    """What ``reconcile`` found for one backend."""
    backend: str
    checked: int = 0
    drift: list[Drift] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as printable lines."""
        out = [f"{self.backend}: {self.checked} remote object(s), {len(self.drift)} drift(s)"]
        for d in self.drift:
            sid = f"service {d.service_id}" if d.service_id else "no service"
            out.append(f"  {d.kind:18} {d.external_id:22} {sid:14} {d.detail}" + (f" -> {d.fixed}" if d.fixed else ""))
        return out


def _match(services: list[Service], remote: list) -> tuple[dict[int, object], list]:
    """Pair remote resources with services (external id, then resource id, then claimed name);
    returns ``({service id: resource}, [unmatched resources])``."""
    by_ext = {s.external_id: s for s in services}
    by_rid = {s.resource_id: s for s in services if s.resource_id}
    by_name = {s.claim_key: s for s in services if s.claim_key}
    matched: dict[int, object] = {}
    orphans = []
    for res in remote:
        svc = ((by_ext.get(res.external_id) if res.external_id else None)
               or (by_rid.get(str(res.resource_id)) if res.resource_id else None)
               or (by_name.get(res.name) if getattr(res, "name", "") else None))
        if svc is None or svc.id in matched:
            orphans.append(res)
        else:
            matched[svc.id] = res
    return matched, orphans


def reconcile(name: str, *, fix: bool = False) -> ReconcileReport:
    """Compare ``get_backend(name).list_resources()`` with our services of that backend.

    Raises ``BackendError`` when the backend cannot list its objects.
    """
    backend = get_backend(name)
    remote = list(backend.list_resources())
    report = ReconcileReport(name, checked=len(remote))
    services = db.session.scalars(db.select(Service).where(Service.backend == name).order_by(Service.id)).all()
    matched, orphans = _match(services, remote)
    actor = "reconcile"
    for svc in services:
        res = matched.get(svc.id)
        busy = svc.current_operation is not None
        if svc.status in ("active", "suspended") and res is None and not busy:
            d = Drift("missing", svc.external_id, svc.id, f"we have it {svc.status}; the backend has nothing")
            if fix:
                lifecycle.mark_lost(svc, f"reconcile: the {name} backend has no object for this service", actor=actor)
                d.fixed = "marked failed (retry rebuilds it)"
            report.drift.append(d)
        elif res is not None and svc.status == "active" and res.state == "failed" and not busy:
            reason = res.detail or "no reason given"
            d = Drift("failed-remote", svc.external_id, svc.id, f"active here, failed on the backend: {reason}")
            if fix:
                lifecycle.mark_failed_remotely(
                    svc, f"reconcile: the {name} backend reports {res.resource_id or 'it'} failed: {reason}",
                    actor=actor)
                d.fixed = "marked failed (retry provisions it again)"
            report.drift.append(d)
        elif res is not None and svc.status == "active" and res.state == "suspended" and not busy:
            d = Drift("suspended-remote", svc.external_id, svc.id, "suspended on the backend only")
            if fix:
                lifecycle.request(svc, "unsuspend", actor=actor, detail="reconcile: the backend had it suspended")
                d.fixed = "unsuspend requested"
            report.drift.append(d)
        elif res is not None and svc.status == "suspended" and res.state == "active" and not busy:
            d = Drift("suspended-local", svc.external_id, svc.id, "suspended here, running on the backend")
            if fix:
                lifecycle.request(svc, "suspend", actor=actor, detail="reconcile: re-apply suspension",
                                  payload={"reason": svc.suspension_reason or "operator"})
                d.fixed = "suspend re-applied"
            report.drift.append(d)
        elif res is not None and svc.status in ("terminated", "cancelled"):
            d = Drift("terminated-remote", svc.external_id, svc.id, "terminated here, still on the backend")
            report.drift.append(d)
        elif svc.status == "needs_reconcile":
            seen = (f"the backend has {res.resource_id or 'it'} ({res.state}): retry adopts it, terminate "
                    "deletes it") if res is not None else "the backend has nothing for it: retry provisions it"
            report.drift.append(Drift("needs-reconcile", svc.external_id, svc.id, seen))
    for res in orphans:
        label = res.external_id or res.name or "?"
        report.drift.append(Drift("unknown", label, None,
                                  f"remote {res.resource_id or '?'} ({res.state}) has no service here"))
    return report


# --------------------------------------------------------------------------- adopt (seed 002's backfill)

class MappingError(ValueError):
    """A mapping file that cannot be read; the message names the line."""


@dataclass(frozen=True)
class MappingRow:
    """One line of a mapping file: the customer's ``email`` and, optionally, a plan slug."""
    email: str
    plan: str = ""


def load_mapping(text: str) -> dict[str, MappingRow]:
    """Parse a mapping file: CSV with a header line ``remote,email[,plan]``; ``remote`` is an
    object's external id, remote id or name (what ``panel reconcile`` prints). Blank lines and
    lines starting with ``#`` are skipped. Returns ``{remote: MappingRow}``; raises
    ``MappingError`` naming the line of a bad or repeated entry."""
    import csv
    import io

    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return {}
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "remote" not in fields or "email" not in fields:
        raise MappingError("the first line must name the columns: remote,email[,plan]")
    reader.fieldnames = fields
    out: dict[str, MappingRow] = {}
    for number, row in enumerate(reader, start=2):
        remote = (row.get("remote") or "").strip()
        email = (row.get("email") or "").strip()
        if not remote or not email or "@" not in email:
            raise MappingError(f"line {number}: give a remote name and an email address")
        if remote in out:
            raise MappingError(f"line {number}: {remote} is mapped twice")
        out[remote] = MappingRow(email, (row.get("plan") or "").strip())
    return out


@dataclass
class AdoptReport:
    """What ``adopt`` did for one backend: counts and, per skipped object, why."""
    backend: str
    examined: int = 0
    adopted: list[tuple[str, int]] = field(default_factory=list)  # (remote label, service id)
    events: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (remote label, why)

    def lines(self) -> list[str]:
        """``examined N / adopted N / events inserted N / skipped N``, then one line per object."""
        out = [f"{self.backend}: examined {self.examined} / adopted {len(self.adopted)} / "
               f"events inserted {self.events} / skipped {len(self.skipped)}"]
        out += [f"  adopted  {label:30} service {sid}" for label, sid in self.adopted]
        out += [f"  skipped  {label:30} {why}" for label, why in self.skipped]
        return out


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return sorted(map(str, a or ())) == sorted(map(str, b or ()))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


def resolve_plan(backend_name: str, options: dict, plans: list) -> tuple[object | None, str]:
    """The one plan of ``plans`` (of backend ``backend_name``) whose options, with the schema's
    defaults, equal every value in ``options``: ``(plan, "")`` or ``(None, why)``."""
    from panel.backends import ValidationError, validate_model
    from panel.plugins import backend_class

    if not options:
        return None, "the object reports no resources to pick a plan by: give --plan (or a plan in the mapping file)"
    cls = backend_class(backend_name)
    hits = []
    for plan in plans:
        try:
            full = validate_model(cls.PlanOptions, plan.options or {}, allow_unknown=True)
        except ValidationError:
            full = dict(plan.options or {})
        if all(_same(full.get(k), v) for k, v in options.items()):
            hits.append(plan)
    wanted = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
    if not hits:
        return None, f"no plan of {backend_name} has {wanted}: give --plan SLUG"
    if len(hits) > 1:
        active = [p for p in hits if p.active]
        if len(active) == 1:
            return active[0], ""
        return None, f"plans {', '.join(p.slug for p in hits)} all have {wanted}: give --plan SLUG"
    return hits[0], ""


def adopt(name: str, *, actor: str, plan_slug: str | None = None,
          mapping: dict[str, MappingRow] | None = None) -> AdoptReport:
    """Make service records for ``name``'s remote objects that no service accounts for.

    Candidates: the objects ``list_resources`` reports that match no service (they carry our
    external id: kept as the service's), plus ``list_unmanaged``'s where the backend offers it
    (given a new external id, which ``Backend.adopt`` writes onto them). For each: the customer is
    the mapping file's (by external id, remote id or name), else the object's own email, and must
    be an existing account (exact email, case insensitive); the plan is the mapping's, else
    ``plan_slug``, else the one plan whose options equal the object's resources; the state must be
    active or suspended. ``Backend.adopt`` takes it over, then ``lifecycle.adopt_service`` records
    it with the event log backfilled. Nothing is ever created or deleted remotely. A second run
    finds nothing left to adopt. Raises ``BackendError`` when the backend cannot list its objects,
    ``LookupError`` for an unknown ``plan_slug``.
    """
    import dataclasses

    from sqlalchemy.exc import IntegrityError

    from panel.backends import BackendError, NotSupportedError, ServiceSpec, ValidationError, validate_model
    from panel.models import Plan, User
    from panel.models.services import new_external_id
    from panel.plugins import backend_class

    backend = get_backend(name)
    cls = backend_class(name)
    mapping = mapping or {}
    given = None
    if plan_slug:
        given = Plan.by_slug(plan_slug)
        if given is None or given.backend != name:
            raise LookupError(f"there is no plan {plan_slug!r} of the {name} backend")
    remote = list(backend.list_resources())
    services = db.session.scalars(db.select(Service).where(Service.backend == name)).all()
    _, orphans = _match(services, remote)
    candidates = [res for res in orphans if res.external_id]
    try:
        candidates += [dataclasses.replace(res, external_id="") for res in backend.list_unmanaged()]
    except NotSupportedError:
        pass
    plans = db.session.scalars(db.select(Plan).where(Plan.backend == name).order_by(Plan.sort_order, Plan.id)).all()
    report = AdoptReport(name, examined=len(candidates))
    db.session.rollback()  # nothing is held while the backend is asked
    for res in candidates:
        label = res.external_id or res.name or str(res.resource_id or "?")
        row = next((mapping[k] for k in (res.external_id, str(res.resource_id or ""), res.name) if k and k in mapping),
                   None)
        if res.state not in ("active", "suspended"):
            report.skipped.append((label, f"it is {res.state} on the backend: adopt it once it is active or suspended"))
            continue
        email = (row.email if row else res.customer_email or "").strip()
        if not email:
            report.skipped.append((label, "no customer: the object names none; map it in a mapping file "
                                          "(remote,email[,plan])"))
            continue
        user = User.by_email(email)
        if user is None:
            report.skipped.append((label, f"no account with the email {email} (panel users create {email})"))
            continue
        plan, why = (None, "")
        if row and row.plan:
            plan = Plan.by_slug(row.plan)
            if plan is None or plan.backend != name:
                report.skipped.append((label, f"the mapping file names plan {row.plan!r}, which {name} has not"))
                continue
        elif given is not None:
            plan = given
        else:
            plan, why = resolve_plan(name, dict(res.options or {}), plans)
            if plan is None:
                report.skipped.append((label, why))
                continue
        try:
            params = validate_model(cls.OrderParams, dict(res.params or {}), allow_unknown=True)
        except ValidationError as exc:
            report.skipped.append((label, f"its order params do not validate: {exc}"))
            continue
        external_id = res.external_id or new_external_id()
        spec = ServiceSpec(service_id=0, external_id=external_id, plan=plan.slug, options=dict(plan.options or {}),
                           params=params, customer_id=user.id, customer_email=user.email,
                           resource_id=str(res.resource_id) if res.resource_id else None)
        try:
            claim = backend.claim_key(spec)
        except BackendError as exc:
            report.skipped.append((label, f"its name cannot be claimed: {exc}"))
            continue
        except Exception as exc:  # a plugin's claim_key that cannot take these params
            report.skipped.append((label, f"its name cannot be claimed ({type(exc).__name__})"))
            continue
        claim_value = claim[1] if claim else None
        if claim_value:
            holder = db.session.scalar(db.select(Service.id).where(Service.backend == name,
                                                                  Service.claim_key == claim_value))
            if holder is not None:
                report.skipped.append((label, f"{claim[0]} {claim_value} is held by service {holder}"))
                continue
        try:
            result = backend.adopt(spec, res)
        except BackendError as exc:
            report.skipped.append((label, f"the backend could not take it over: {exc}"))
            continue
        detail = (f"adopted by {actor} from {name} {res.resource_id or label} ({res.state}); customer {user.email} "
                  + ("from the mapping file" if row else "from the object") + f"; plan {plan.slug} "
                  + ("from the mapping file" if row and row.plan else "given" if given is not None
                     else "matched by its resources"))
        try:
            service, events = lifecycle.adopt_service(
                user, plan, external_id=external_id, params=params, status=res.state, result=result, actor=actor,
                claim_key=claim_value, created_at=res.created_at, suspended_at=res.suspended_at,
                packages=tuple(res.packages or ()), detail=detail)
        except IntegrityError:
            db.session.rollback()
            report.skipped.append((label, "another run adopted it meanwhile (or its name is taken)"))
            continue
        report.adopted.append((label, service.id))
        report.events += events
    return report

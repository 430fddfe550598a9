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

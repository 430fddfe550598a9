"""``panel reconcile NAME``: compare a backend's remote objects with our records.

Drift kinds:

* ``missing``: we think the service is active or suspended, the backend has nothing for it.
  Fix: the service goes to ``failed`` (an operator's retry rebuilds it).
* ``suspended-remote`` / ``suspended-local``: suspended on one side only. Fix: request the
  suspend or unsuspend that makes the remote side match our record.
* ``unknown``: a remote object carries an external id we do not know (never deleted
  automatically: an operator decides).
* ``terminated-remote``: we terminated it, it still exists. Fix: request terminate again.
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


def reconcile(name: str, *, fix: bool = False) -> ReconcileReport:
    """Compare ``get_backend(name).list_resources()`` with our services of that backend.

    Raises ``BackendError`` when the backend cannot list its objects.
    """
    backend = get_backend(name)
    remote = {r.external_id: r for r in backend.list_resources()}
    report = ReconcileReport(name, checked=len(remote))
    services = db.session.scalars(db.select(Service).where(Service.backend == name)).all()
    ours = {s.external_id: s for s in services}
    actor = "reconcile"
    for svc in services:
        res = remote.get(svc.external_id)
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
    for ext, res in remote.items():
        if ext not in ours:
            report.drift.append(Drift("unknown", ext, None, f"remote {res.resource_id or '?'} ({res.state}) has no service here"))
    return report

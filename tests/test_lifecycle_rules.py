"""The state machine as a table: every (status, action) pair through ``lifecycle.request``.

The expected outcome of each pair is written out here by hand, independently of
``panel.lifecycle.RULES``, so a change to a rule (or to the checks in ``request``) fails a row.
Each row starts from a quiescent service (no unfinished operation) in the given status, asks for
the action through the public API, lets the in-process jobs run against the memory backend, and
checks: refused (``LifecycleError``, nothing recorded, no backend call) or allowed (one operation,
the backend called once, and the statuses the service went through).
"""
from __future__ import annotations

import pytest
from corelib import wait_jobs
from memory_backend import REMOTE

from panel import lifecycle
from panel.extensions import db
from panel.models import Operation, Service
from panel.models.services import STATUSES

REFUSED = "refused"

# status -> action -> REFUSED, or the statuses the service passes through after the request, the
# last one being where it ends once the job succeeded ([] = the status never changes).
TABLE: dict[str, dict[str, str | list[str]]] = {
    "pending_payment": {
        "provision": ["provisioning", "active"],   # billing's "paid"
        "suspend": REFUSED,
        "unsuspend": REFUSED,
        "change_plan": REFUSED,                    # nothing to change before it is paid
        "terminate": REFUSED,                      # never paid: cancel it instead
        "run_action": REFUSED,
        "purge": REFUSED,
    },
    "provisioning": {
        "provision": REFUSED,
        "suspend": REFUSED,
        "unsuspend": REFUSED,
        "change_plan": REFUSED,
        "terminate": ["terminating", "terminated"],
        "run_action": REFUSED,
        "purge": REFUSED,
    },
    "active": {
        "provision": REFUSED,
        "suspend": ["suspended"],
        "unsuspend": [],                           # already running: succeeds, stays active
        "change_plan": [],
        "terminate": ["terminating", "terminated"],
        "run_action": [],  # a backend's custom action: the status never changes
        "purge": REFUSED,
    },
    "suspended": {
        "provision": REFUSED,
        "suspend": [],                             # a repeated suspend succeeds (idempotent)
        "unsuspend": ["active"],
        "change_plan": [],
        "terminate": ["terminating", "terminated"],
        "run_action": [],
        "purge": REFUSED,
    },
    "failed": {                                    # an operator retries; only terminate is allowed
        "provision": REFUSED,
        "suspend": REFUSED,
        "unsuspend": REFUSED,
        "change_plan": REFUSED,
        "terminate": ["terminating", "terminated"],
        "run_action": REFUSED,
        "purge": REFUSED,
    },
    "terminating": {                               # a terminate that is no longer running
        "provision": REFUSED,
        "suspend": REFUSED,
        "unsuspend": REFUSED,
        "change_plan": REFUSED,
        "terminate": ["terminated"],
        "run_action": REFUSED,
        "purge": REFUSED,
    },
    "needs_reconcile": {                           # a provision whose outcome is unknown: retry or terminate
        "provision": REFUSED,
        "suspend": REFUSED,
        "unsuspend": REFUSED,
        "change_plan": REFUSED,
        "terminate": ["terminating", "terminated"],
        "run_action": REFUSED,
        "purge": REFUSED,
    },
    "terminated": {action: REFUSED for action in ("provision", "suspend", "unsuspend", "change_plan",
                                                    "terminate", "run_action",
                                                    "purge")},  # allowed, but the memory backend keeps nothing
    "cancelled": {action: REFUSED for action in ("provision", "suspend", "unsuspend", "change_plan",
                                                   "terminate", "run_action", "purge")},
}

PAIRS = [(status, action) for status, row in TABLE.items() for action in row]


def refusal(status: str, action: str) -> str:
    """The sentence a refusal shows (to the customer or the operator who asked)."""
    if status == "terminated" and action == "purge":
        return "the memory backend keeps no data after termination"
    if status in ("terminated", "cancelled"):
        return f"the service is {status}"
    if action == "terminate" and status == "pending_payment":
        return "the service was never paid for: cancel it instead"
    return f"cannot {action.replace('_', ' ')} a service that is {status}"


def test_the_table_covers_every_status_and_action():
    """A new status or action must get its row here."""
    assert set(TABLE) == set(STATUSES)
    for status, row in TABLE.items():
        assert set(row) == set(lifecycle.RULES), status


def quiescent_service(customer, plans, status: str) -> Service:
    """A service of ``customer`` in ``status`` with no unfinished operation, as the lifecycle
    leaves one (a remote object exists while it is provisioned)."""
    plan = plans["paid"] if status == "pending_payment" else plans["free"]
    svc = Service(user=customer, plan=plan, backend="memory", params={"name": f"t-{status}"},
                  status=status, status_detail="")
    db.session.add(svc)
    db.session.flush()
    if status in ("provisioning", "active", "suspended", "failed", "needs_reconcile", "terminating"):
        svc.resource_id = f"m-{svc.external_id}"
        svc.backend_data = {"host": "t.test"}
        REMOTE.objects[svc.external_id] = {"state": "suspended" if status == "suspended" else "active",
                                           "size": 128}
    if status == "failed":
        db.session.add(Operation(service=svc, action="suspend", state="failed", attempts=1,
                                 last_error="memory: suspend timed out", payload={"prior_status": "active"}))
    if status == "needs_reconcile":
        db.session.add(Operation(service=svc, action="provision", state="failed", attempts=1,
                                 last_error="memory: the answer was lost and the lookup timed out",
                                 payload={"prior_status": "pending_payment"}))
    db.session.commit()
    return svc


@pytest.mark.parametrize("status,action", PAIRS, ids=[f"{s}-{a}" for s, a in PAIRS])
def test_request(app, customer, plans, status, action):
    svc = quiescent_service(customer, plans, status)
    expected = TABLE[status][action]
    payload = {"plan_id": plans["big"].id} if action == "change_plan" else (
        {"name": "restart"} if action == "run_action" else None)
    ops_before = len(svc.operations)
    REMOTE.calls.clear()
    events_before = len(svc.events)

    if expected == REFUSED:
        with pytest.raises(lifecycle.LifecycleError) as info:
            lifecycle.request(svc, action, actor="test", payload=payload)
        assert str(info.value) == refusal(status, action)
        wait_jobs(app)
        db.session.refresh(svc)
        assert svc.status == status
        assert len(svc.operations) == ops_before, "a refused request recorded an operation"
        assert len(svc.events) == events_before, "a refused request recorded an event"
        assert REMOTE.calls == []
        return

    lifecycle.request(svc, action, actor="test", payload=payload)
    wait_jobs(app)
    db.session.refresh(svc)
    new_ops = svc.operations[ops_before:]
    assert [(op.action, op.state) for op in new_ops] == [(action, "succeeded")]
    called = "restart" if action == "run_action" else action
    assert REMOTE.calls == [(called, svc.external_id)], "the backend was not called exactly once"
    path: list[str] = []
    for event in svc.events[events_before:]:
        if event.to_status != (path[-1] if path else status):
            path.append(event.to_status)
    assert path == expected
    assert svc.status == (expected[-1] if expected else status)
    if action == "change_plan":
        assert svc.plan.slug == "mem-big"


# --------------------------------------------------------------------------- busy services
# A request made while another operation is unfinished is checked against the status the service
# will have once that operation succeeds (``projected``), and waits its turn (``pending``); a
# failed service refuses everything but terminate even when a waiting operation would make it
# look live. Rows: (status, the unfinished or failed operations it has, action) -> REFUSED, or the
# state of the new operation and the states the earlier ones end in.
HAS_FAILED = "the service has failed: an operator must retry or terminate it first"
BUSY = [
    # provisioning, its provision running: it will be active
    ("provisioning", [("provision", "running")], "provision", (REFUSED, "cannot provision a service that is active")),
    ("provisioning", [("provision", "running")], "suspend", ("pending", ["running"])),
    ("provisioning", [("provision", "running")], "unsuspend", ("pending", ["running"])),
    ("provisioning", [("provision", "running")], "change_plan", ("pending", ["running"])),
    ("provisioning", [("provision", "running")], "terminate", ("pending", ["running"])),
    # active with a suspend waiting in the queue: it will be suspended
    ("active", [("suspend", "queued")], "suspend", ("pending", ["queued"])),
    ("active", [("suspend", "queued")], "unsuspend", ("pending", ["queued"])),
    ("active", [("suspend", "queued")], "provision", (REFUSED, "cannot provision a service that is suspended")),
    # terminate supersedes what has not started yet, and is idempotent while on its way
    ("active", [("suspend", "queued")], "terminate", ("queued", ["cancelled"])),
    ("active", [("suspend", "running"), ("unsuspend", "pending")], "terminate", ("pending", ["running", "cancelled"])),
    ("terminating", [("terminate", "running")], "terminate", ("none", ["running"])),
    ("terminating", [("terminate", "running")], "suspend", (REFUSED, "cannot suspend a service that is terminated")),
    # provision failed with a suspend waiting behind it: still failed, only terminate
    ("failed", [("provision", "failed"), ("suspend", "pending")], "unsuspend", (REFUSED, HAS_FAILED)),
    ("failed", [("provision", "failed"), ("suspend", "pending")], "change_plan", (REFUSED, HAS_FAILED)),
    ("failed", [("provision", "failed"), ("suspend", "pending")], "terminate", ("queued", ["failed", "cancelled"])),
    # a provision whose outcome is unknown: the same, in its own words
    ("needs_reconcile", [("provision", "failed"), ("suspend", "pending")], "unsuspend",
     (REFUSED, "the service needs reconciling: an operator must retry or terminate it first")),
    ("needs_reconcile", [("provision", "failed"), ("suspend", "pending")], "terminate",
     ("queued", ["failed", "cancelled"])),
]


@pytest.mark.parametrize("status,existing,action,expected", BUSY,
                         ids=[f"{s}-{'+'.join(a for a, _ in e)}-{x}" for s, e, x, _ in BUSY])
def test_request_while_busy(app, customer, plans, status, existing, action, expected):
    svc = quiescent_service(customer, plans, "active" if status == "provisioning" else status)
    svc.status = status
    db.session.query(Operation).filter_by(service_id=svc.id).delete()
    for op_action, state in existing:
        db.session.add(Operation(service=svc, action=op_action, state=state, attempts=int(state != "pending"),
                                 payload={"prior_status": "active"}))
    db.session.commit()
    db.session.refresh(svc)
    payload = {"plan_id": plans["big"].id} if action == "change_plan" else None
    before = [(op.id, op.state) for op in svc.operations]
    events_before = len(svc.events)
    if expected[0] == REFUSED:
        with pytest.raises(lifecycle.LifecycleError) as info:
            lifecycle.request(svc, action, actor="test", payload=payload)
        assert str(info.value) == expected[1]
        db.session.refresh(svc)
        assert [(op.id, op.state) for op in svc.operations] == before
        assert svc.status == status and len(svc.events) == events_before
        return
    new_state, earlier = expected
    lifecycle.request(svc, action, actor="test", payload=payload)
    if new_state == "queued":  # it was started: let its job run, then look at what it recorded
        wait_jobs(app)
    db.session.refresh(svc)
    ops = svc.operations
    assert [op.state for op in ops[:len(before)]] == earlier
    added = ops[len(before):]
    if new_state == "none":
        assert added == [], "a second terminate was recorded"
        return
    assert [op.action for op in added] == [action]
    if new_state == "pending":
        assert added[0].state == "pending" and svc.status == status
    else:
        assert added[0].state == "succeeded" and svc.status == "terminated"

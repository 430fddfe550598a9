"""A small in-memory backend plugin used by the core's lifecycle tests.

It is a real ``Backend`` (registered through the real ``register_backends`` hook), keeping its
"remote" objects in a dict, with a scripted list of failures so tests can drive retries and
failures. End-to-end tests use the real PDS plugin and its HTTP stand-in instead.
"""
from __future__ import annotations

import threading
from typing import Literal

from pydantic import Field, SecretStr

from panel import hookimpl
from panel.backends import (Action, ActionResult, Backend, Connect, ConnectItem, Credential, Credentials,
                            HowTo, InProgress, Limit, Metric, PermanentBackendError, Provisioned, Resource, Resources,
                            Schema, Secret, TransientBackendError, Usage, ValidationError)
from panel.backends import BillableMetric, billable


class MemoryRemote:
    """The fake remote side: objects by external id, a call log and scripted failures."""

    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, list[str]] = {}
        self.capacity = True
        self.list_error: Exception | None = None
        self.on_call = None  # a test's callback(method, spec), run inside the backend call
        self.claims: list = []  # the ServiceSpec each claim_key call was given (an order's draft)
        self.validated: list = []  # the (params, options) each validate_order_params call was given
        self.used_mib = 0  # what a service "uses": check_change_plan refuses to shrink below it
        self.default_names = False  # True: an order without a name gets its email's local part (as PDS)
        self.lock = threading.Lock()

    def fail_next(self, method: str, *kinds: str) -> None:
        """Make the next calls of ``method`` fail: each kind is "transient", "permanent", "lost"
        (the work is done, then the answer is lost: a transient error after the effect) or
        "installing" (``InProgress``: still being done remotely, ask again in 0.2 s)."""
        self.failures.setdefault(method, []).extend(kinds)

    def _next_failure(self, method: str) -> str | None:
        with self.lock:
            queue = self.failures.get(method) or []
            return queue.pop(0) if queue else None

    def _maybe_fail(self, method: str, kind: str | None = None) -> None:
        kind = kind or self._next_failure(method)
        if kind in ("transient", "lost"):
            raise TransientBackendError(f"memory: {method} timed out (HTTP 503)")
        if kind == "permanent":
            raise PermanentBackendError(f"memory: {method} rejected: hostname is already taken")
        if kind == "installing":
            raise InProgress(f"memory: {method} is installing", retry_after=0.2, resource_id="m-installing")


REMOTE = MemoryRemote()


class SignalParams(Schema):
    """The memory backend's "Send signal" action takes one choice."""

    signal: Literal["hup", "usr1"] = "hup"


class MemoryBackend(Backend):
    name = "memory"
    label = "In-memory test backend"
    billable_metrics = billable(BillableMetric("posts", "count", "sum", "Posts"),
                                BillableMetric("storage_gib", "GiB", "max", "Storage"))

    class Settings(Schema):
        region: str = "test-1"
        api_key: SecretStr | None = None

    class PlanOptions(Schema):
        size_mib: int = Field(128, ge=1, json_schema_extra={"unit": "MiB"})

    class OrderParams(Schema):
        name: str = Field(max_length=30, pattern=r"^[a-z0-9-]+$")

    def validate_order_params(self, params, options):
        REMOTE.validated.append((params, options))
        REMOTE._maybe_fail("validate_order_params")
        clean = super().validate_order_params(params, options)
        if clean["name"] == "taken":
            raise ValidationError({"name": "is already taken"})
        return clean

    def check_capacity(self, options, params):
        from panel.backends import NoCapacityError

        if not REMOTE.capacity:
            raise NoCapacityError("no capacity in region test-1")

    def claim_key(self, spec):
        REMOTE.claims.append(spec)
        if spec.params.get("name") == "refused-here":  # the remote side's own rule on names, with its field
            raise PermanentBackendError("memory: the name refused-here is reserved", {"name": "is reserved here"})
        REMOTE._maybe_fail("claim_key")
        if REMOTE.default_names and not spec.params.get("name"):
            return ("name", spec.customer_email.split("@")[0])
        return ("name", spec.params["name"])

    def provision(self, spec):
        REMOTE.calls.append(("provision", spec.external_id))
        if REMOTE.on_call is not None:
            REMOTE.on_call("provision", spec)
        kind = REMOTE._next_failure("provision")
        if kind != "lost":
            REMOTE._maybe_fail("provision", kind)
        REMOTE.objects.setdefault(spec.external_id, {"state": "active", "size": spec.options["size_mib"]})
        if kind == "lost":
            REMOTE._maybe_fail("provision", kind)
        return Provisioned(resource_id=f"m-{spec.external_id}", data={"host": f"{spec.params['name']}.test"},
                           secrets={"root_password": "s3cret-root-pw", "db_password": Secret("s3cret-db-pw")})

    def suspend(self, spec):
        REMOTE.calls.append(("suspend", spec.external_id))
        if REMOTE.on_call is not None:
            REMOTE.on_call("suspend", spec)
        REMOTE._maybe_fail("suspend")
        REMOTE.objects[spec.external_id]["state"] = "suspended"

    def unsuspend(self, spec):
        REMOTE.calls.append(("unsuspend", spec.external_id))
        REMOTE._maybe_fail("unsuspend")
        REMOTE.objects[spec.external_id]["state"] = "active"

    def terminate(self, spec):
        REMOTE.calls.append(("terminate", spec.external_id))
        REMOTE._maybe_fail("terminate")
        REMOTE.objects.pop(spec.external_id, None)

    def check_change_plan(self, spec, new_options):
        from panel.backends import NotSupportedError

        if new_options["size_mib"] < REMOTE.used_mib:
            raise NotSupportedError(f"the service uses {REMOTE.used_mib} MiB: it cannot shrink to "
                                    f"{new_options['size_mib']} MiB")

    def change_plan(self, spec, new_options):
        REMOTE.calls.append(("change_plan", spec.external_id))
        REMOTE._maybe_fail("change_plan")
        REMOTE.objects[spec.external_id]["size"] = new_options["size_mib"]
        return None

    def usage(self, spec):
        obj = REMOTE.objects.get(spec.external_id, {})
        size = obj.get("size", 0)
        metrics = [Metric("memory", size / 2, "MiB", limit=size)]
        metrics += [Metric(name, obj[name], unit) for name, unit in (("posts", "count"), ("storage_gib", "GiB"))
                    if name in obj]  # billable counters a test sets on the remote object
        return Usage(tuple(metrics))

    def details(self, spec):
        """Details with the root password at the top, nested in a mapping and inside a list, the
        way real backends nest them (PDS ``encrypted_config.adminPassword``): the core masks all."""
        password = spec.secrets["root_password"].reveal()
        return {"host": spec.backend_data.get("host"), "password": password,
                "config": {"region": "test-1", "adminPassword": password},
                "accounts": [{"user": "root", "password": password}]}

    def list_resources(self):
        REMOTE.calls.append(("list", ""))
        if REMOTE.list_error is not None:
            raise REMOTE.list_error
        return [Resource(ext, f"m-{ext}", obj["state"], detail=obj.get("detail", ""),
                         params={"name": obj["name"]} if "name" in obj else {},
                         options={"size_mib": obj["size"]} if "size" in obj else {})
                for ext, obj in REMOTE.objects.items()]

    def client_area(self, spec):
        if REMOTE.on_call is not None:
            REMOTE.on_call("client_area", spec)
        host = spec.backend_data.get("host")
        return [Connect((ConnectItem("Host", host, "hostname"), ConnectItem("URL", f"https://{host}/", "url"))),
                Credentials((Credential("root_password", "Root password", username="root"),)),
                Resources((Limit("Memory", spec.options.get("size_mib"), "MiB"),)),
                HowTo("Sign in with the root password.", steps=("Open the URL", "Sign in"))]

    def actions(self, spec):
        return [Action("restart", "Restart", description="Restarts the memory object"),
                Action("rotate_password", "Reset root password", confirm="Reset the root password?",
                       statuses=("active", "suspended")),
                Action("signal", "Send signal", params=SignalParams)]

    def run_action(self, spec, name, params):
        REMOTE.calls.append((name, spec.external_id))
        REMOTE._maybe_fail("run_action")
        if name == "rotate_password":
            return ActionResult("The root password was reset.", data={"password_reset": True},
                                secrets={"root_password": f"new-pw-{len(REMOTE.calls)}"})
        if name == "signal":
            REMOTE.objects[spec.external_id]["signal"] = params["signal"]
            return ActionResult(f"Sent {params['signal']}.")
        REMOTE.objects[spec.external_id]["restarts"] = REMOTE.objects[spec.external_id].get("restarts", 0) + 1
        return ActionResult("Restarted.")


class MemoryPlugin:
    @hookimpl
    def register_backends(self, register):
        register(MemoryBackend)

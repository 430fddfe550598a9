"""A small in-memory backend plugin used by the core's lifecycle tests.

It is a real ``Backend`` (registered through the real ``register_backends`` hook), keeping its
"remote" objects in a dict, with a scripted list of failures so tests can drive retries and
failures. End-to-end tests use the real PDS plugin and its HTTP stand-in instead.
"""
from __future__ import annotations

import threading

from panel import hookimpl
from panel.backends import (Backend, Field, Metric, PermanentBackendError, Provisioned, Resource, Secret,
                            TransientBackendError, Usage, ValidationError)


class MemoryRemote:
    """The fake remote side: objects by external id, a call log and scripted failures."""

    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, list[str]] = {}
        self.capacity = True
        self.lock = threading.Lock()

    def fail_next(self, method: str, *kinds: str) -> None:
        """Make the next calls of ``method`` fail: each kind is "transient" or "permanent"."""
        self.failures.setdefault(method, []).extend(kinds)

    def _maybe_fail(self, method: str) -> None:
        with self.lock:
            queue = self.failures.get(method) or []
            kind = queue.pop(0) if queue else None
        if kind == "transient":
            raise TransientBackendError(f"memory: {method} timed out (HTTP 503)")
        if kind == "permanent":
            raise PermanentBackendError(f"memory: {method} rejected: hostname is already taken")


REMOTE = MemoryRemote()


class MemoryBackend(Backend):
    name = "memory"
    label = "In-memory test backend"
    settings_schema = (Field("region", default="test-1"), Field("api_key", secret=True))
    plan_options_schema = (Field("size_mib", "integer", minimum=1, default=128, unit="MiB"),)
    order_params_schema = (Field("name", required=True, max_length=30, pattern=r"[a-z0-9-]+"),)

    def validate_order_params(self, params, options):
        clean = super().validate_order_params(params, options)
        if clean["name"] == "taken":
            raise ValidationError({"name": "is already taken"})
        return clean

    def check_capacity(self, options, params):
        from panel.backends import NoCapacityError

        if not REMOTE.capacity:
            raise NoCapacityError("no capacity in region test-1")

    def claim_key(self, spec):
        return ("name", spec.params["name"])

    def provision(self, spec):
        REMOTE.calls.append(("provision", spec.external_id))
        REMOTE._maybe_fail("provision")
        REMOTE.objects.setdefault(spec.external_id, {"state": "active", "size": spec.options["size_mib"]})
        return Provisioned(resource_id=f"m-{spec.external_id}", data={"host": f"{spec.params['name']}.test"},
                           secrets={"root_password": "s3cret-root-pw", "db_password": Secret("s3cret-db-pw")})

    def suspend(self, spec):
        REMOTE.calls.append(("suspend", spec.external_id))
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

    def change_plan(self, spec, new_options):
        REMOTE.calls.append(("change_plan", spec.external_id))
        REMOTE.objects[spec.external_id]["size"] = new_options["size_mib"]
        return None

    def usage(self, spec):
        size = REMOTE.objects.get(spec.external_id, {}).get("size", 0)
        return Usage((Metric("memory", size / 2, "MiB", limit=size),))

    def details(self, spec):
        """Details with the root password at the top, nested in a mapping and inside a list, the
        way real backends nest them (PDS ``encrypted_config.adminPassword``): the core masks all."""
        password = spec.secrets["root_password"].reveal()
        return {"host": spec.backend_data.get("host"), "password": password,
                "config": {"region": "test-1", "adminPassword": password},
                "accounts": [{"user": "root", "password": password}]}

    def list_resources(self):
        return [Resource(ext, f"m-{ext}", obj["state"]) for ext, obj in REMOTE.objects.items()]


class MemoryPlugin:
    @hookimpl
    def register_backends(self, register):
        register(MemoryBackend)

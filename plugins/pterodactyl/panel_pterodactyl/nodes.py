"""Our node configuration (the ``nodes`` setting) and the capacity arithmetic.

Seed 001 kept a ``ptero_nodes`` table (region, max RAM and disk, reserved headroom, enabled). The
totals and what is already allocated now come live from Pterodactyl (``GET /api/application/nodes``:
``memory``, ``disk``, ``memory_overallocate``, ``disk_overallocate``, ``allocated_resources``,
``maintenance_mode``); what stays ours is, per node id::

    {"id": 3, "region": "us-east", "enabled": true, "headroom_memory": 2048, "headroom_disk": 20480}

with the headroom in MiB. That list is the plugin setting ``nodes`` (Field type ``json``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from panel.backends import ValidationError

REGION_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_NODE_KEYS = {"id", "region", "enabled", "headroom_memory", "headroom_disk"}


def validate_nodes(value: Any) -> list[dict]:
    """Validate the ``nodes`` setting and return it cleaned (sorted by id, defaults filled).

    Accepts a list (or its JSON text) of ``{"id": int >= 1, "region": str, "enabled": bool = true,
    "headroom_memory": MiB >= 0 = 0, "headroom_disk": MiB >= 0 = 0}``. Raises
    ``panel.backends.ValidationError`` whose keys name the entry, e.g. ``nodes[1].region``.
    """
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValidationError({"nodes": "must be a JSON list of node objects"}) from None
    if not isinstance(value, list):
        raise ValidationError({"nodes": "must be a list of node objects"})
    errors: dict[str, str] = {}
    clean: list[dict] = []
    seen: set[int] = set()
    for i, entry in enumerate(value):
        where = f"nodes[{i}]"
        if not isinstance(entry, Mapping):
            errors[where] = "must be an object"
            continue
        for key in sorted(set(entry) - _NODE_KEYS):
            errors[f"{where}.{key}"] = "is not a known field"
        node_id = entry.get("id")
        if isinstance(node_id, bool) or not isinstance(node_id, int) or node_id < 1:
            errors[f"{where}.id"] = "must be a Pterodactyl node id (integer >= 1)"
        elif node_id in seen:
            errors[f"{where}.id"] = f"node {node_id} is listed twice"
        else:
            seen.add(node_id)
        region = entry.get("region")
        if not isinstance(region, str) or not REGION_PATTERN.fullmatch(region):
            errors[f"{where}.region"] = "must be a region code like 'us-east' (lower case, digits, - . _)"
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            errors[f"{where}.enabled"] = "must be true or false"
        headroom = {}
        for key in ("headroom_memory", "headroom_disk"):
            amount = entry.get(key, 0)
            if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
                errors[f"{where}.{key}"] = "must be a whole number of MiB >= 0"
            headroom[key] = amount
        clean.append({"id": node_id, "region": region, "enabled": enabled, **headroom})
    if errors:
        raise ValidationError(errors)
    return sorted(clean, key=lambda n: n["id"])


@dataclass(frozen=True)
class NodeCapacity:
    """One live node merged with our configuration. Every amount is in MiB.

    ``memory_limit``/``disk_limit`` are Pterodactyl's own limits with over-allocation:
    ``memory * (1 + memory_overallocate / 100)`` (FindViableNodesService / Node::isViable).
    ``free_memory``/``free_disk`` subtract the allocated resources and our headroom.
    """

    id: int
    name: str
    region: str | None
    enabled: bool
    maintenance: bool
    memory: int
    disk: int
    memory_limit: float
    disk_limit: float
    allocated_memory: int
    allocated_disk: int
    headroom_memory: int
    headroom_disk: int
    configured: bool
    memory_overallocate: int = 0
    disk_overallocate: int = 0
    location_id: int | None = None
    location: str | None = None

    @property
    def free_memory(self) -> float:
        """MiB of memory a new server may still take."""
        return self.memory_limit - self.allocated_memory - self.headroom_memory

    @property
    def free_disk(self) -> float:
        """MiB of disk a new server may still take."""
        return self.disk_limit - self.allocated_disk - self.headroom_disk

    def fits(self, memory: int, disk: int) -> bool:
        """True when a server of ``memory``/``disk`` MiB fits and the node takes new servers."""
        return (self.configured and self.enabled and not self.maintenance
                and memory <= self.free_memory and disk <= self.free_disk)

    def why_not(self, memory: int, disk: int) -> str:
        """A short reason this node cannot take the server ("" when it can)."""
        if not self.configured:
            return "not configured"
        if not self.enabled:
            return "disabled"
        if self.maintenance:
            return "in maintenance"
        if memory > self.free_memory:
            return f"{self.free_memory:g} MiB memory free < {memory} MiB"
        if disk > self.free_disk:
            return f"{self.free_disk:g} MiB disk free < {disk} MiB"
        return ""

    def to_json(self) -> dict:
        """A plain mapping for the CLI and logs."""
        return {"id": self.id, "name": self.name, "region": self.region, "enabled": self.enabled,
                "maintenance": self.maintenance, "memory": self.memory, "disk": self.disk,
                "allocated_memory": self.allocated_memory, "allocated_disk": self.allocated_disk,
                "headroom_memory": self.headroom_memory, "headroom_disk": self.headroom_disk,
                "free_memory": self.free_memory, "free_disk": self.free_disk,
                "memory_overallocate": self.memory_overallocate, "disk_overallocate": self.disk_overallocate,
                "location_id": self.location_id, "location": self.location,
                "configured": self.configured}


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _location_name(live: Mapping[str, Any]) -> str | None:
    """The location's ``short`` code when the node came with ``?include=location`` (else ``None``).

    Without read rights on locations Pterodactyl sends a ``null_resource`` there; that gives ``None``.
    """
    related = ((live.get("relationships") or {}).get("location") or {})
    attrs = related.get("attributes") if isinstance(related, Mapping) else None
    if not isinstance(attrs, Mapping):
        return None
    short, long = attrs.get("short"), attrs.get("long")
    return str(short or long) if (short or long) else None


def merge(live: Mapping[str, Any], config: Mapping[str, Any] | None) -> NodeCapacity:
    """Merge a node's live attributes (``GET /nodes``) with our config entry (or ``None``)."""
    memory, disk = _int(live.get("memory")), _int(live.get("disk"))
    allocated = live.get("allocated_resources") or {}
    memory_over, disk_over = _int(live.get("memory_overallocate")), _int(live.get("disk_overallocate"))
    return NodeCapacity(
        id=_int(live.get("id")), name=str(live.get("name") or ""),
        region=(config or {}).get("region"), enabled=bool((config or {}).get("enabled", False)),
        maintenance=bool(live.get("maintenance_mode")), memory=memory, disk=disk,
        memory_limit=memory * (1 + memory_over / 100),
        disk_limit=disk * (1 + disk_over / 100),
        allocated_memory=_int(allocated.get("memory")), allocated_disk=_int(allocated.get("disk")),
        headroom_memory=_int((config or {}).get("headroom_memory")),
        headroom_disk=_int((config or {}).get("headroom_disk")),
        configured=config is not None, memory_overallocate=memory_over, disk_overallocate=disk_over,
        location_id=_int(live.get("location_id")) or None, location=_location_name(live))

"""``panel doctor`` checks of the Pterodactyl backend (the core's ``doctor_checks`` hook), from seed
001's "Verification queries" and "Common issues & fixes": nodes without a region or unknown to
Pterodactyl, services on nodes that no longer exist, eggs of the ``games`` table that do not
exist, and enabled nodes without a free allocation ("No available capacity").

Remote calls (Pterodactyl v1.11 application API): ``GET /nodes`` (all pages),
``GET /nests/{nest}/eggs/{egg}``, ``GET /nodes/{id}/allocations`` (all pages).
"""
from __future__ import annotations

from panel.doctor import Check, Problem

from panel_pterodactyl.client import NotFound


def check_nodes(backend, specs) -> list[Problem]:
    """Live nodes the ``nodes`` setting does not know (no region: never used), configured nodes
    Pterodactyl does not have, and live services recorded on a node that no longer exists."""
    problems = []
    live = backend.live_nodes()
    live_ids = {n.id for n in live}
    for node in live:
        if not node.configured:
            problems.append(Problem(
                f"node {node.id} ({node.name}) has no region in the panel, so no server is ever placed on it",
                f"panel pterodactyl node-set {node.id} --region REGION (or the Nodes page of /admin/plugins)",
                "warning"))
    for entry in backend.node_config:
        if entry["id"] not in live_ids:
            problems.append(Problem(
                f"the nodes setting lists node {entry['id']} ({entry['region']}), which Pterodactyl does not have",
                f"panel pterodactyl node-remove {entry['id']}, or correct its id"))
    for spec in specs:
        node = (spec.backend_data or {}).get("node_id")
        if node is not None and int(node) not in live_ids:
            problems.append(Problem(
                f"service {spec.service_id} ({spec.external_id}) is recorded on node {node}, which Pterodactyl "
                "no longer has",
                "panel reconcile pterodactyl (then retry or terminate the service on /admin/)"))
    return problems


def check_eggs(backend, specs) -> list[Problem]:
    """Every egg of the ``games`` setting exists (``GET /nests/{nest}/eggs/{egg}``); plans' own eggs
    are checked by the core's plans check (``validate_plan_options``)."""
    problems = []
    for game, ref in sorted(backend.games.items()):
        try:
            backend._egg(ref["nest"], ref["egg"])
        except NotFound:
            problems.append(Problem(
                f"the games setting maps {game} to egg {ref['egg']} of nest {ref['nest']}, which does not exist",
                "look the egg up in Pterodactyl (Admin > Nests) and correct the games setting in /admin/plugins"))
    return problems


def check_allocations(backend, specs) -> list[Problem]:
    """Enabled nodes (not in maintenance) where every allocation is assigned: new servers cannot be
    placed there."""
    problems = []
    for node in backend.live_nodes():
        if not (node.configured and node.enabled and not node.maintenance):
            continue
        if not any(not a.get("assigned") for a in backend.client.iter_list(f"nodes/{node.id}/allocations")):
            problems.append(Problem(
                f"node {node.id} ({node.name}, {node.region}) has no free allocation: no new server fits there",
                f"add allocations (ports) to node {node.id} in Pterodactyl (Admin > Nodes > {node.name} > Allocation)"))
    return problems


def checks() -> list[Check]:
    """The checks this plugin adds to ``panel doctor``."""
    return [Check("pterodactyl nodes", check_nodes, backend="pterodactyl"),
            Check("pterodactyl eggs", check_eggs, backend="pterodactyl"),
            Check("pterodactyl allocations", check_allocations, backend="pterodactyl")]

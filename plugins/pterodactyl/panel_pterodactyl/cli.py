"""``panel pterodactyl ...``: manage which Pterodactyl nodes sell in which region.

The commands run inside the panel's app context (the core's ``FlaskGroup``) and use the core's
``panel.plugins.get_backend`` (the configured backend instance) and ``set_setting`` (stores a
validated plugin setting). Both are imported when a command runs, never at import time.
"""
from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from panel.backends import BackendError, ValidationError

from panel_pterodactyl.client import NotFound
from panel_pterodactyl.nodes import validate_nodes


def _backend():
    from panel.plugins import get_backend

    try:
        backend = get_backend("pterodactyl")
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    if backend is None:
        raise click.ClickException("the pterodactyl plugin is not configured (panel plugins set pterodactyl ...)")
    return backend


@click.group("pterodactyl")
def pterodactyl_group():
    """Pterodactyl game servers: nodes, regions and headroom."""


@pterodactyl_group.command("nodes")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def nodes_command(as_json: bool):
    """List the panel's nodes merged with our config (free = limit - allocated - headroom, MiB)."""
    backend = _backend()
    try:
        nodes = backend.live_nodes(with_location=True)
        config = backend.node_config
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    live_ids = {n.id for n in nodes}
    missing = [c for c in config if c["id"] not in live_ids]
    if as_json:
        click.echo(json.dumps({"nodes": [n.to_json() for n in nodes], "missing": missing}, indent=2))
        return
    header = f"{'ID':>4}  {'NAME':<16} {'REGION':<12} {'STATE':<12} {'MEMORY':>8} {'ALLOC':>8} " \
             f"{'HEADROOM':>8} {'FREE MEM':>9} {'DISK':>9} {'ALLOC':>9} {'HEADROOM':>8} {'FREE DISK':>10}"
    click.echo(header)
    for n in nodes:
        state = ("maintenance" if n.maintenance else "enabled" if n.enabled else "disabled") \
            if n.configured else "unconfigured"
        click.echo(f"{n.id:>4}  {n.name[:16]:<16} {(n.region or '-'):<12} {state:<12} {n.memory:>8} "
                   f"{n.allocated_memory:>8} {n.headroom_memory:>8} {n.free_memory:>9g} {n.disk:>9} "
                   f"{n.allocated_disk:>9} {n.headroom_disk:>8} {n.free_disk:>10g}")
    for c in missing:
        click.echo(f"{c['id']:>4}  {'(not in panel)':<16} {c['region']:<12} configured but missing in Pterodactyl")
    click.echo("(all amounts in MiB; free includes over-allocation)")


@pterodactyl_group.command("node-set")
@with_appcontext
@click.argument("node_id", type=click.IntRange(min=1))
@click.option("--region", help="Region code, e.g. us-east (required for a new node).")
@click.option("--enabled/--disabled", default=None, help="Sell on this node or not.")
@click.option("--headroom-memory", type=click.IntRange(min=0), help="Memory to keep free, MiB.")
@click.option("--headroom-disk", type=click.IntRange(min=0), help="Disk to keep free, MiB.")
def node_set_command(node_id, region, enabled, headroom_memory, headroom_disk):
    """Add or change node NODE_ID in the ``nodes`` setting."""
    from panel.plugins import set_setting

    backend = _backend()
    try:
        nodes = backend.node_config
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    entry = next((n for n in nodes if n["id"] == node_id), None)
    if entry is None:
        if not region:
            raise click.UsageError("--region is required for a node that is not configured yet")
        entry = {"id": node_id, "region": region, "enabled": True, "headroom_memory": 0, "headroom_disk": 0}
        nodes.append(entry)
    try:
        backend.client.get_item(f"nodes/{node_id}")
    except NotFound:
        raise click.ClickException(f"Pterodactyl has no node {node_id}") from None
    except BackendError as exc:
        click.echo(f"warning: could not check node {node_id} in Pterodactyl: {exc}", err=True)
    for key, value in (("region", region), ("enabled", enabled), ("headroom_memory", headroom_memory),
                       ("headroom_disk", headroom_disk)):
        if value is not None:
            entry[key] = value
    try:
        clean = validate_nodes(nodes)
    except ValidationError as exc:
        raise click.ClickException(f"invalid node settings: {exc}") from None
    try:
        set_setting("pterodactyl", "nodes", clean)
    except (ValidationError, BackendError) as exc:
        raise click.ClickException(f"could not store nodes: {exc}") from None
    saved = next(n for n in clean if n["id"] == node_id)
    click.echo(f"node {node_id}: region {saved['region']}, {'enabled' if saved['enabled'] else 'disabled'}, "
               f"headroom {saved['headroom_memory']} MiB memory / {saved['headroom_disk']} MiB disk")


@pterodactyl_group.command("node-remove")
@with_appcontext
@click.argument("node_id", type=click.IntRange(min=1))
def node_remove_command(node_id):
    """Remove node NODE_ID from the ``nodes`` setting (its servers keep running)."""
    from panel.plugins import set_setting

    backend = _backend()
    try:
        nodes = backend.node_config
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    if not any(n["id"] == node_id for n in nodes):
        raise click.ClickException(f"node {node_id} is not configured")
    set_setting("pterodactyl", "nodes", [n for n in nodes if n["id"] != node_id])
    click.echo(f"node {node_id} removed; no new servers will be placed on it")

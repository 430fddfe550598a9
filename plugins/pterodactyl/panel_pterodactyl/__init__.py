"""hostpanel plugin: Pterodactyl game servers (entry point group ``panel``, name ``pterodactyl``).

Registers :class:`~panel_pterodactyl.backend.PterodactylBackend`, the ``panel pterodactyl``
command group (``nodes``, ``node-set``, ``node-remove``) and the operator page
``/admin/pterodactyl/nodes`` (:mod:`panel_pterodactyl.web`).
"""
from panel.hookspecs import hookimpl

from panel_pterodactyl.backend import PterodactylBackend

__all__ = ["PterodactylBackend", "register_backends", "register_blueprints", "register_commands", "doctor_checks"]


@hookimpl
def register_backends(register):
    """Register the Pterodactyl backend class."""
    register(PterodactylBackend)


@hookimpl
def register_commands(cli):
    """Add the ``panel pterodactyl`` group (node management) to the ``panel`` CLI."""
    from panel_pterodactyl.cli import pterodactyl_group

    cli.add_command(pterodactyl_group)


@hookimpl
def register_blueprints(register):
    """Add the operator page ``/admin/pterodactyl/nodes`` (nodes, regions and headroom)."""
    from panel_pterodactyl.web import URL_PREFIX, bp

    register(bp, url_prefix=URL_PREFIX)


@hookimpl
def doctor_checks():
    """``panel doctor``: nodes without a region or unknown, missing eggs, nodes without a free allocation."""
    from panel_pterodactyl.doctor import checks

    return checks()

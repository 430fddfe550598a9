"""hostpanel plugin: Pterodactyl game servers (entry point group ``panel``, name ``pterodactyl``).

Registers :class:`~panel_pterodactyl.backend.PterodactylBackend` and the ``panel pterodactyl``
command group (``nodes``, ``node-set``, ``node-remove``).
"""
from panel.hookspecs import hookimpl

from panel_pterodactyl.backend import PterodactylBackend

__all__ = ["PterodactylBackend", "register_backends", "register_commands"]


@hookimpl
def register_backends(register):
    """Register the Pterodactyl backend class."""
    register(PterodactylBackend)


@hookimpl
def register_commands(cli):
    """Add the ``panel pterodactyl`` group (node management) to the ``panel`` CLI."""
    from panel_pterodactyl.cli import pterodactyl_group

    cli.add_command(pterodactyl_group)

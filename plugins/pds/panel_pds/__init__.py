"""hostpanel plugin ``pds``: AT Protocol PDS hosts made through a PDS deploy API (seed 000).

pluggy loads this module through the ``panel`` entry point; ``register_backends`` hands the core
``PdsBackend``. ``panel_pds.standin`` is a loopback stand-in of the deploy API for tests and demos.
"""
from panel.hookspecs import hookimpl

__all__ = ["PdsBackend", "register_backends"]


@hookimpl
def register_backends(register):
    """Register the ``pds`` backend (``panel_pds.backend.PdsBackend``)."""
    from panel_pds.backend import PdsBackend

    register(PdsBackend)


def __getattr__(name):  # lazy, so ``python -m panel_pds.standin`` does not import requests
    if name == "PdsBackend":
        from panel_pds.backend import PdsBackend

        return PdsBackend
    raise AttributeError(name)

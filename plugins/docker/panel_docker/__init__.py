"""hostpanel-docker: runs one single-container app (Postiz by default) per customer space.

The plugin registers :class:`~panel_docker.backend.DockerBackend` (backend id ``docker``)
through the ``register_backends`` hook (entry-point group ``panel``).
"""
from panel.hookspecs import hookimpl

from panel_docker.backend import DockerBackend

__all__ = ["DockerBackend", "register_backends", "doctor_checks"]


@hookimpl
def register_backends(register):
    """Register the Docker backend with the core."""
    register(DockerBackend)


@hookimpl
def doctor_checks():
    """``panel doctor``: the engine, the image, the network and the shared PostgreSQL."""
    from panel_docker.doctor import checks

    return checks()

"""hostpanel plugin ``kubernetes``: one tenant as one namespaced custom resource (seed 002).

pluggy loads this module through the ``panel`` entry point; ``register_backends`` hands the core
``KubernetesBackend``. ``panel_kubernetes.standin`` is a loopback stand-in of the Kubernetes API
server's CustomObjects paths (with a fake operator) for tests and demos.
"""
from panel.hookspecs import hookimpl

__all__ = ["KubernetesBackend", "register_backends"]


@hookimpl
def register_backends(register):
    """Register the ``kubernetes`` backend (``panel_kubernetes.backend.KubernetesBackend``)."""
    from panel_kubernetes.backend import KubernetesBackend

    register(KubernetesBackend)


def __getattr__(name):  # lazy, so ``python -m panel_kubernetes.standin`` does not import the client
    if name == "KubernetesBackend":
        from panel_kubernetes.backend import KubernetesBackend

        return KubernetesBackend
    raise AttributeError(name)

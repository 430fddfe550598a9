"""hostpanel plugin ``kubernetes``: one tenant as one namespaced custom resource (seed 002).

pluggy loads this module through the ``panel`` entry point; ``register_backends`` hands the core
``KubernetesBackend``. ``panel_kubernetes.standin`` is a loopback stand-in of the Kubernetes API
server's CustomObjects paths (with a fake operator) for tests and demos.
"""
from panel.hookspecs import hookimpl

__all__ = ["KubernetesBackend", "register_backends", "doctor_checks"]


@hookimpl
def register_backends(register):
    """Register the ``kubernetes`` backend (``panel_kubernetes.backend.KubernetesBackend``)."""
    from panel_kubernetes.backend import KubernetesBackend

    register(KubernetesBackend)


@hookimpl
def doctor_checks():
    """``panel doctor``: the CRD is installed and listable."""
    from panel_kubernetes.doctor import checks

    return checks()


def __getattr__(name):  # lazy, so ``python -m panel_kubernetes.standin`` does not import the client
    if name == "KubernetesBackend":
        from panel_kubernetes.backend import KubernetesBackend

        return KubernetesBackend
    raise AttributeError(name)

"""Shared helpers of the kubernetes plugin's tests (a uniquely named module, unlike ``conftest``)."""
from __future__ import annotations


from panel.backends import Secret
from panel.testing import make_spec, wait_for  # noqa: F401  (re-exported for the tests)
from panel_kubernetes.backend import SERVICE_LABEL, KubernetesBackend, label_value_for

TOKEN = "k8s-test-token-4c9e71b2"
NAMESPACE = "tenants"


def make_backend(url: str, token: str = TOKEN, **settings) -> KubernetesBackend:
    """A KubernetesBackend pointed at ``url`` with short timeouts (3 s per request, 3 s for Ready)."""
    base = {"api_url": url, "token": Secret(token), "timeout_seconds": 3, "ready_timeout_seconds": 3,
            "namespace": NAMESPACE}
    base.update(settings)
    return KubernetesBackend(base)


def spec_for(backend: KubernetesBackend, *, options: dict | None = None, params: dict | None = None, **extra):
    """A fresh ServiceSpec (unique external id) validated by the backend's schemas."""
    return make_spec(backend, options=options, params=params, **extra)


def ours(standin, spec) -> list[dict]:
    """The stand-in's objects that carry ``spec``'s external id label."""
    value = label_value_for(spec.external_id)
    return [o for o in standin.objects(NAMESPACE) if (o["metadata"].get("labels") or {}).get(SERVICE_LABEL) == value]



def requests_of(standin, verb: str) -> list[dict]:
    """Recorded requests of one verb (get, list, create, patch, delete, discovery)."""
    return [r for r in standin.requests if r["verb"] == verb]

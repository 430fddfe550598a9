"""``panel doctor`` check of the Kubernetes backend (the core's ``doctor_checks`` hook): the CRD is
installed and served in the version the settings name, namespaced, and custom resources can be
listed in the namespace (that covers ``test_connection``).

Remote calls: ``GET /apis/{group}/{version}`` (discovery) and ``GET .../namespaces/{namespace}/{plural}``.
"""
from __future__ import annotations

from panel.backends import BackendError
from panel.doctor import Check, Problem


def check_crd(backend, specs) -> list[Problem]:
    """The custom resource definition is installed (``test_connection``'s discovery and list)."""
    try:
        backend.test_connection()
    except BackendError as exc:
        text = str(exc)
        if "CRD" in text or "has no resource" in text or "cluster-scoped" in text:
            fix = (f"install the CRD of {backend.resource_label} (kubectl apply -f the operator's CRD manifest), or "
                   "correct the group, version and plural settings")
        else:
            fix = "correct api_url, token or kubeconfig in /admin/plugins (the token needs get/list on the CRD)"
        return [Problem(f"the custom resources cannot be used: {text}", fix)]
    return []


def checks() -> list[Check]:
    """The checks this plugin adds to ``panel doctor``."""
    return [Check("kubernetes CRD", check_crd, backend="kubernetes", covers_connection=True)]

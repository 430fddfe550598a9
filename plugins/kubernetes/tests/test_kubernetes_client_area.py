"""The Kubernetes client area: the tenant URL (setting or status.url), the tenant's kubeconfig read
from the Secret the operator names (core/v1 read_namespaced_secret), and the packages as resources."""
from __future__ import annotations

import pytest

from k8s_testlib import make_backend, spec_for
from panel.backends import Connect, Credentials, Links, PermanentBackendError, Resources
from panel.testing import after_provision

OPTIONS = {"packages": ["searxng-local-search", "threema"], "cpu": 0.5, "memory_mib": 2048, "storage_gib": 20}


def test_tenant_url_from_the_operator_and_kubeconfig_from_its_secret(kube, standin):
    standin.tenant_domain = "tenants.example.ch"
    standin.kubeconfigs = True
    spec = spec_for(kube, options=OPTIONS, params={"tenant_name": "acme"})
    spec = after_provision(spec, kube.provision(spec))
    sections = kube.client_area(spec)
    connect = next(s for s in sections if isinstance(s, Connect))
    assert connect.items[0].value == "https://hp-acme.tenants.example.ch" and connect.items[0].kind == "url"
    assert next(s for s in sections if isinstance(s, Links)).links[0].url == "https://hp-acme.tenants.example.ch"
    assert next(s for s in sections if isinstance(s, Credentials)).credentials[0].name == "kubeconfig"
    limits = {i.label: i for i in next(s for s in sections if isinstance(s, Resources)).items}
    assert limits["Packages"].value == "searxng-local-search, threema"
    assert (limits["CPU"].limit, limits["CPU"].unit) == (0.5, "cores")
    assert (limits["Memory"].limit, limits["Storage"].limit) == (2048.0, 20.0)
    kubeconfig = kube.reveal_credential(spec, "kubeconfig").reveal()
    assert kubeconfig == standin.tenant_kubeconfig(kube.namespace, "hp-acme")
    assert "kind: Config" in kubeconfig and kubeconfig not in repr(sections)
    reads = [r for r in standin.requests if r["path"].startswith("/api/v1/namespaces/")]
    assert reads[-1]["path"] == f"/api/v1/namespaces/{kube.namespace}/secrets/hp-acme-kubeconfig"


def test_the_tenant_url_setting_wins(standin):
    kube = make_backend(standin.url, tenant_url="https://{tenant_name}.pieced.ch")
    spec = spec_for(kube, options=OPTIONS, params={"tenant_name": "bravo"})
    spec = after_provision(spec, kube.provision(spec))
    assert kube.tenant_url(spec) == "https://bravo.pieced.ch"


def test_no_kubeconfig_credential_without_one_and_a_gone_secret_is_permanent(kube, standin):
    spec = spec_for(kube, options=OPTIONS, params={"tenant_name": "charlie"})
    spec = after_provision(spec, kube.provision(spec))
    assert not any(isinstance(s, Credentials) for s in kube.client_area(spec))
    with pytest.raises(PermanentBackendError, match="no kubeconfig"):
        kube.reveal_credential(spec, "kubeconfig")
    gone = after_provision(spec, kube.provision(spec))
    gone = type(gone)(**{**gone.__dict__, "backend_data": {**gone.backend_data,
                                                           "kubeconfig_secret": {"name": "missing", "key": "kubeconfig"}}})
    with pytest.raises(PermanentBackendError, match="does not exist"):
        kube.reveal_credential(gone, "kubeconfig")

"""The Kubernetes backend's ``panel doctor`` check against the stand-in API server: the CRD is
installed (or not, or under another plural), and a refused token."""
from __future__ import annotations

from k8s_testlib import make_backend
from panel_kubernetes import doctor


def test_a_served_crd_is_fine(kube):
    assert doctor.check_crd(kube, []) == []


def test_a_crd_that_is_not_installed_says_install_it(standin):
    [problem] = doctor.check_crd(make_backend(standin.url, group="pieced.ch"), [])
    assert "is the CRD installed?" in problem.message
    assert problem.fix.startswith("install the CRD of tenants.pieced.ch/v1 (kubectl apply")


def test_another_plural_names_what_is_served(standin):
    [problem] = doctor.check_crd(make_backend(standin.url, plural="piecedtenants"), [])
    assert "has no resource 'piecedtenants' (it serves: tenants)" in problem.message
    assert "install the CRD" in problem.fix


def test_a_refused_token_points_at_the_credentials(standin):
    [problem] = doctor.check_crd(make_backend(standin.url, token="wrong-token-123456"), [])
    assert "wrong-token-123456" not in problem.message
    assert "api_url, token or kubeconfig" in problem.fix

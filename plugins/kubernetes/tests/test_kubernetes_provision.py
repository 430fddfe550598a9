"""provision against the stand-in API server: the object we create, adoption, collisions, Ready waits,
and typed errors for the answers a kube-apiserver gives."""
from __future__ import annotations

import pytest

from k8s_testlib import NAMESPACE, TOKEN, make_backend, ours, requests_of, spec_for, wait_for
from panel.backends import PermanentBackendError, TransientBackendError
from panel_kubernetes.backend import EMAIL_ANNOTATION, EXTERNAL_ID_ANNOTATION, SERVICE_LABEL, ready_condition


def test_creates_one_labelled_custom_resource_with_the_plan_in_its_spec(kube, standin):
    spec = spec_for(kube, options={"packages": ["searxng-local-search", "mail"], "cpu": 0.5, "memory_mib": 2048,
                                   "storage_gib": 20}, params={"tenant_name": "alice"}, email="alice@example.org")
    result = kube.provision(spec)
    obj = standin.get(NAMESPACE, "hp-alice")
    assert obj is not None and result.resource_id == "hp-alice"
    assert obj["apiVersion"] == "hostpanel.dev/v1" and obj["kind"] == "Tenant"
    assert obj["metadata"]["labels"][SERVICE_LABEL] == spec.external_id
    assert obj["metadata"]["annotations"][EMAIL_ANNOTATION] == "alice@example.org"
    assert obj["metadata"]["annotations"][EXTERNAL_ID_ANNOTATION] == spec.external_id
    assert obj["spec"] == {"packages": ["searxng-local-search", "mail"], "suspend": False,
                           "resources": {"cpu": "500m", "memory": "2048Mi", "storage": "20Gi"}}
    assert result.data["uid"] == obj["metadata"]["uid"]
    assert result.data["namespace"] == NAMESPACE and result.data["generation"] == 1
    assert result.data["ready"] is True and result.data["adopted"] is False
    assert result.data["packages"] == ["searxng-local-search", "mail"]
    create = requests_of(standin, "create")
    assert len(create) == 1 and create[0]["path"] == f"/apis/hostpanel.dev/v1/namespaces/{NAMESPACE}/tenants"


def test_name_is_derived_from_the_external_id_without_a_tenant_name(kube, standin):
    spec = spec_for(kube)
    result = kube.provision(spec)
    assert result.resource_id.startswith("hp-") and len(result.resource_id) <= 63
    assert not result.resource_id.startswith("hp-hp-")
    assert [o["metadata"]["name"] for o in ours(standin, spec)] == [result.resource_id]
    assert kube.claim_key(spec) is None


def test_spec_template_fills_placeholders_and_cannot_override_the_plan(standin):
    kube = make_backend(standin.url, spec_template={
        "domain": "{tenant_name}.tenants.example.com", "owner": "{customer_email}", "replicas": "{cpu}",
        "packages": ["from-template"], "labels": {"plan": "{plan}"}})
    spec = spec_for(kube, options={"packages": ["a"], "cpu": 2}, params={"tenant_name": "bob"}, email="b@example.org")
    kube.provision(spec)
    got = standin.get(NAMESPACE, "hp-bob")["spec"]
    assert got["domain"] == "bob.tenants.example.com" and got["owner"] == "b@example.org"
    assert got["replicas"] == 2  # a whole-string placeholder keeps its JSON type
    assert got["packages"] == ["a"] and got["labels"] == {"plan": "contract"}


def test_crash_between_create_and_record_then_the_retry_adopts_the_same_object(standin):
    """The create reached the API server but its answer was lost (the worker timed out / died)."""
    kube = make_backend(standin.url, timeout_seconds=0.5)
    spec = spec_for(kube, params={"tenant_name": "carol"})
    standin.delay_next("create", 3.0)  # far past the client's 0.5 s, on any machine
    with pytest.raises(TransientBackendError):
        kube.provision(spec)
    # the server finishes the create after the client gave up
    assert wait_for(lambda: len(ours(standin, spec)) == 1, 10), "the late create never landed"
    uid = ours(standin, spec)[0]["metadata"]["uid"]
    again = kube.provision(spec)  # the retry sees the bare spec: no resource_id recorded
    assert again.data["adopted"] is True and again.data["uid"] == uid
    assert len(ours(standin, spec)) == 1 and len(standin.objects(NAMESPACE)) == 1


def test_a_same_named_object_that_is_not_ours_is_a_collision_and_is_left_alone(kube, standin):
    standin.put({"metadata": {"name": "hp-dave", "namespace": NAMESPACE, "labels": {}},
                 "spec": {"packages": ["theirs"], "suspend": False}})
    spec = spec_for(kube, params={"tenant_name": "dave"})
    with pytest.raises(PermanentBackendError) as info:
        kube.provision(spec)
    assert "hp-dave" in str(info.value) and "does not belong" in str(info.value)
    assert info.value.fields == {"tenant_name": "is already taken in the cluster"}
    # terminating our (never made) service must not delete theirs
    kube.terminate(spec)
    survivor = standin.get(NAMESPACE, "hp-dave")
    assert survivor is not None and survivor["spec"]["packages"] == ["theirs"]
    assert requests_of(standin, "delete") == [] and requests_of(standin, "patch") == []


def test_a_collision_with_another_service_names_its_owner(kube, standin):
    standin.put({"metadata": {"name": "hp-erin", "namespace": NAMESPACE,
                              "labels": {SERVICE_LABEL: "hp-someone-else"},
                              "annotations": {EXTERNAL_ID_ANNOTATION: "hp-someone-else"}}, "spec": {}})
    with pytest.raises(PermanentBackendError, match="hp-someone-else"):
        kube.provision(spec_for(kube, params={"tenant_name": "erin"}))


def test_ready_false_with_a_reason_is_permanent_and_carries_reason_and_message(kube, standin):
    standin.fail_ready("QuotaExceeded", "namespace quota for tenants is exhausted")
    with pytest.raises(PermanentBackendError) as info:
        kube.provision(spec_for(kube, params={"tenant_name": "frank"}))
    assert "QuotaExceeded" in str(info.value) and "quota for tenants is exhausted" in str(info.value)


def test_ready_false_while_progressing_keeps_waiting(standin):
    kube = make_backend(standin.url, ready_timeout_seconds=0.6)
    standin.fail_ready("Progressing", "pulling images")
    with pytest.raises(TransientBackendError, match="Progressing"):
        kube.provision(spec_for(kube, params={"tenant_name": "gina"}))


def test_ready_timeout_is_transient_and_the_retry_adopts_once_ready(standin):
    kube = make_backend(standin.url, ready_timeout_seconds=0.5)
    standin.ready_delay = 2.0
    spec = spec_for(kube, params={"tenant_name": "hank"})
    with pytest.raises(TransientBackendError) as info:
        kube.provision(spec)
    assert "not Ready after 0.5 seconds" in str(info.value)
    # the operator reports Ready later; the retry then adopts the object
    assert wait_for(lambda: (ready_condition(standin.get(NAMESPACE, "hp-hank")) or {}).get("status") == "True", 10)
    result = kube.provision(spec)
    assert result.data["ready"] is True and result.data["adopted"] is True
    assert len(ours(standin, spec)) == 1


def test_ready_timeout_zero_does_not_wait(standin):
    kube = make_backend(standin.url, ready_timeout_seconds=0)
    standin.ready_delay = 30
    result = kube.provision(spec_for(kube))
    assert result.data["ready"] is False
    assert requests_of(standin, "get") == []  # it never polled the object for Ready


def test_a_ready_condition_of_an_older_generation_is_not_trusted(standin):
    kube = make_backend(standin.url, ready_timeout_seconds=0.5)
    spec = spec_for(kube, params={"tenant_name": "ivan"})
    standin.operator_enabled = False
    standin.put({"metadata": {"name": "hp-ivan", "namespace": NAMESPACE, "generation": 2,
                              "labels": {SERVICE_LABEL: spec.external_id},
                              "annotations": {EXTERNAL_ID_ANNOTATION: spec.external_id}},
                 "spec": {"packages": [], "suspend": False},
                 "status": {"observedGeneration": 1,
                            "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled"}]}})
    with pytest.raises(TransientBackendError, match="not observed the latest generation"):
        kube.provision(spec)


def test_a_server_error_is_transient_and_the_retry_succeeds_with_one_object(kube, standin):
    spec = spec_for(kube, params={"tenant_name": "judy"})
    standin.fail_next("create", 500)
    with pytest.raises(TransientBackendError, match="500"):
        kube.provision(spec)
    assert ours(standin, spec) == []
    result = kube.provision(spec)
    assert result.resource_id == "hp-judy" and len(ours(standin, spec)) == 1


def test_a_server_error_while_waiting_is_transient(kube, standin):
    spec = spec_for(kube, params={"tenant_name": "kate"})
    standin.ready_delay = 0.3
    standin.fail_next("get", 503)
    with pytest.raises(TransientBackendError, match="503"):
        kube.provision(spec)
    assert kube.provision(spec).data["adopted"] is True


def test_too_many_requests_is_transient_with_retry_after(kube, standin):
    standin.fail_next("create", 429, retry_after=7)
    with pytest.raises(TransientBackendError) as info:
        kube.provision(spec_for(kube))
    assert info.value.retry_after == 7


def test_an_invalid_object_is_permanent_and_lists_the_causes(kube, standin):
    standin.invalid_packages = {"forbidden-skill"}
    with pytest.raises(PermanentBackendError) as info:
        kube.provision(spec_for(kube, options={"packages": ["ok", "forbidden-skill"]}))
    assert "422" in str(info.value) and "spec.packages" in str(info.value) and "forbidden-skill" in str(info.value)
    assert "spec.packages" in info.value.fields


def test_forbidden_is_permanent_and_names_the_rbac_problem(kube, standin):
    standin.forbid_namespace(NAMESPACE)
    with pytest.raises(PermanentBackendError) as info:
        kube.provision(spec_for(kube))
    assert "403" in str(info.value) and "RBAC" in str(info.value)


def test_rejected_token_is_permanent(standin):
    kube = make_backend(standin.url, token="nope-" + TOKEN)
    with pytest.raises(PermanentBackendError, match="401"):
        kube.provision(spec_for(kube))
    assert standin.requests == []  # unauthenticated requests are not recorded as served


def test_unreachable_api_server_is_transient(unreachable_kube):
    with pytest.raises(TransientBackendError, match="cannot reach"):
        unreachable_kube.provision(spec_for(unreachable_kube))


def test_a_slow_api_server_times_out_as_transient(standin):
    kube = make_backend(standin.url, timeout_seconds=0.3)
    standin.delay_next("get", 3.0)  # far past the client's 0.3 s, on any machine
    with pytest.raises(TransientBackendError, match="did not answer within 0.3 seconds"):
        kube.details(spec_for(kube, params={"tenant_name": "liam"}))


def test_an_object_being_deleted_is_not_adopted(kube, standin):
    spec = spec_for(kube, params={"tenant_name": "mia"})
    standin.put({"metadata": {"name": "hp-mia", "namespace": NAMESPACE, "deletionTimestamp": "2026-01-01T00:00:00Z",
                              "labels": {SERVICE_LABEL: spec.external_id},
                              "annotations": {EXTERNAL_ID_ANNOTATION: spec.external_id}}, "spec": {}})
    with pytest.raises(TransientBackendError, match="being deleted"):
        kube.provision(spec)

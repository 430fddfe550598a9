"""suspend/unsuspend, terminate, change_plan, usage, details, list_resources and test_connection
against the stand-in API server."""
from __future__ import annotations

import dataclasses

import pytest

from k8s_testlib import NAMESPACE, TOKEN, make_backend, requests_of, spec_for
from panel.backends import PermanentBackendError, TransientBackendError
from panel.testing import after_provision
from panel_kubernetes import backend as backend_module
from panel_kubernetes.backend import EXTERNAL_ID_ANNOTATION, SERVICE_LABEL


@pytest.fixture
def live(kube, standin):
    """A provisioned tenant ``hp-tina`` with packages a, b and 1 core / 1024 MiB."""
    spec = spec_for(kube, options={"packages": ["a", "b"], "cpu": 1, "memory_mib": 1024},
                    params={"tenant_name": "tina"})
    spec = after_provision(spec, kube.provision(spec))
    standin.requests.clear()
    return spec


# --------------------------------------------------------------------------- suspend / unsuspend

def test_suspend_twice_patches_once_and_the_operator_stamps_suspended_at(kube, standin, live):
    kube.suspend(live)
    kube.suspend(live)
    patches = requests_of(standin, "patch")
    assert len(patches) == 1
    assert patches[0]["body"] == {"spec": {"suspend": True}}
    assert patches[0]["content_type"] == "application/merge-patch+json"
    obj = standin.get(NAMESPACE, "hp-tina")
    assert obj["spec"]["suspend"] is True and obj["status"]["suspendedAt"]
    kube.unsuspend(live)
    kube.unsuspend(live)
    assert len(requests_of(standin, "patch")) == 2
    obj = standin.get(NAMESPACE, "hp-tina")
    assert obj["spec"]["suspend"] is False and "suspendedAt" not in obj["status"]


def test_suspend_state_is_read_from_the_object_the_api_returned(kube, standin, live):
    standin.edit_spec(NAMESPACE, "hp-tina", {"suspend": True})  # suspended by someone else
    kube.suspend(live)
    assert requests_of(standin, "patch") == []
    kube.unsuspend(live)
    assert requests_of(standin, "patch")[0]["body"] == {"spec": {"suspend": False}}


def test_suspend_of_a_missing_tenant_is_permanent(kube, standin, live):
    standin.reset()
    with pytest.raises(PermanentBackendError, match="deleted outside the panel"):
        kube.suspend(live)


def test_suspend_finds_the_object_by_label_when_the_name_is_not_recorded(standin, live):
    other_prefix = make_backend(standin.url, name_prefix="x-")
    bare = dataclasses.replace(live, resource_id=None)
    other_prefix.suspend(bare)  # derived name x-tina does not exist; the label finds hp-tina
    assert standin.get(NAMESPACE, "hp-tina")["spec"]["suspend"] is True


# --------------------------------------------------------------------------- terminate

def test_terminate_deletes_in_background_with_a_uid_precondition(kube, standin, live):
    uid = standin.get(NAMESPACE, "hp-tina")["metadata"]["uid"]
    kube.terminate(live)
    deletes = requests_of(standin, "delete")
    assert len(deletes) == 1
    assert deletes[0]["propagation_policy"] == "Background"
    assert deletes[0]["body"]["preconditions"] == {"uid": uid}
    assert standin.get(NAMESPACE, "hp-tina") is None


def test_terminate_of_an_object_already_gone_succeeds_without_deleting(kube, standin, live):
    standin.reset()
    kube.terminate(live)
    kube.terminate(live)
    assert requests_of(standin, "delete") == []


def test_terminate_treats_a_404_race_as_done(kube, standin, live):
    standin.fail_next("delete", 404, reason="NotFound")
    kube.terminate(live)
    assert len(requests_of(standin, "delete")) == 1


def test_terminate_never_deletes_a_replacement_that_is_not_ours(kube, standin, live):
    standin.reset()
    standin.put({"metadata": {"name": "hp-tina", "namespace": NAMESPACE, "labels": {SERVICE_LABEL: "hp-other"},
                              "annotations": {EXTERNAL_ID_ANNOTATION: "hp-other"}}, "spec": {}})
    kube.terminate(live)
    assert standin.get(NAMESPACE, "hp-tina") is not None
    assert requests_of(standin, "delete") == []


def test_terminate_server_error_is_transient(kube, standin, live):
    standin.fail_next("delete", 500)
    with pytest.raises(TransientBackendError):
        kube.terminate(live)
    kube.terminate(live)
    assert standin.get(NAMESPACE, "hp-tina") is None


# --------------------------------------------------------------------------- change_plan

def test_change_plan_diff_is_computed_from_the_objects_the_api_returned(kube, standin, live):
    # someone enabled "x" by hand, and an admission webhook drops "blocked" from every spec
    standin.edit_spec(NAMESPACE, "hp-tina", {"packages": ["a", "b", "x"]})

    def webhook(spec):
        spec["packages"] = [p for p in spec.get("packages") or [] if p != "blocked"]
    standin.mutate = webhook
    result = kube.change_plan(live, {"packages": ["a", "c", "blocked"], "cpu": 2, "storage_gib": 10})
    assert result.resource_id == "hp-tina"
    assert result.data["packages_added"] == ["c"]          # not "blocked": the API never committed it
    assert result.data["packages_removed"] == ["b", "x"]   # "x" came from the cluster, not from our plans
    assert result.data["packages"] == ["a", "c"]
    obj = standin.get(NAMESPACE, "hp-tina")
    assert obj["spec"]["packages"] == ["a", "c"]
    assert obj["spec"]["resources"] == {"cpu": "2", "storage": "10Gi"}  # memory removed: the plan has none
    assert result.data["uid"] == obj["metadata"]["uid"]
    patch = requests_of(standin, "patch")[0]
    assert patch["content_type"] == "application/merge-patch+json"
    assert patch["body"]["metadata"]["resourceVersion"], "the patch must be conditional on what was read"


def test_change_plan_rereads_after_a_conflict(kube, standin, live):
    standin.fail_next("patch", 409, reason="Conflict")
    result = kube.change_plan(live, {"packages": ["b"]})
    assert result.data["packages_removed"] == ["a"] and result.data["packages_added"] == []
    assert len(requests_of(standin, "patch")) == 2


def test_change_plan_with_invalid_options_is_permanent(kube, live):
    with pytest.raises(PermanentBackendError) as info:
        kube.change_plan(live, {"packages": "not-a-list"})
    assert "packages" in info.value.fields


# --------------------------------------------------------------------------- usage and details

def test_usage_reads_status_usage_with_units_and_plan_limits(kube, standin, live):
    standin.usage = {"cpu": "250m", "memory": "512Mi", "storage": "3Gi"}
    standin.edit_spec(NAMESPACE, "hp-tina", {"touch": 1})  # let the operator report again
    usage = kube.usage(live)
    got = {m.name: (m.value, m.unit, m.limit) for m in usage.metrics}
    assert got["cpu"] == (0.25, "cores", 1.0)
    assert got["memory_mib"] == (512.0, "MiB", 1024.0)
    assert got["storage_gib"] == (3.0, "GiB", None)
    assert got["packages"] == (2.0, "count", None)
    assert got["package_days"] == (2.0, "day", None)        # the billable metric: two packages today
    assert "status.usage" in usage.note


def test_usage_without_status_usage_shows_plan_limits_with_a_note(kube, live):
    usage = kube.usage(live)
    got = {m.name: (m.value, m.unit) for m in usage.metrics}
    assert got["cpu_limit"] == (1.0, "cores") and got["memory_limit"] == (1024.0, "MiB")
    assert "no status.usage" in usage.note


def test_details_show_phase_conditions_suspension_and_packages(kube, standin, live):
    kube.suspend(live)
    details = kube.details(live)
    assert details["name"] == "hp-tina" and details["namespace"] == NAMESPACE
    assert details["suspended"] is True and details["suspended_at"]
    assert details["phase"] == "Suspended" and details["packages"] == ["a", "b"]
    assert details["observed_generation"] == details["generation"] == 2
    assert details["conditions"][0]["type"] == "Ready"


def test_details_of_a_missing_object_say_absent(kube, standin, live):
    standin.reset()
    assert kube.details(live)["state"] == "absent"


# --------------------------------------------------------------------------- list_resources

def test_list_resources_reports_states_and_ignores_unlabelled_objects(kube, standin, live, monkeypatch):
    monkeypatch.setattr(backend_module, "LIST_PAGE_SIZE", 2)  # exercise paging
    suspended = spec_for(kube, params={"tenant_name": "sus"})
    suspended = after_provision(suspended, kube.provision(suspended))
    kube.suspend(suspended)
    slow = make_backend(standin.url, ready_timeout_seconds=0)
    standin.ready_delay = 60
    pending = spec_for(slow, params={"tenant_name": "pending"})
    slow.provision(pending)
    standin.put({"metadata": {"name": "not-ours", "namespace": NAMESPACE}, "spec": {}})
    found = {r.external_id: r for r in kube.list_resources()}
    assert set(found) == {live.external_id, suspended.external_id, pending.external_id}
    res = found[live.external_id]
    assert (res.external_id, res.resource_id, res.state, res.detail) == (live.external_id, "hp-tina", "active",
                                                                        "Reconciled")
    assert res.params == {"tenant_name": "tina"} and res.created_at is not None
    assert found[suspended.external_id].state == "suspended"
    assert found[pending.external_id].state == "provisioning"
    lists = requests_of(standin, "list")
    assert any(r["query"].get("continue") for r in lists), "expected more than one page"
    assert all(r["query"].get("labelSelector") == SERVICE_LABEL for r in lists)


def test_list_resources_reports_a_failed_tenant(kube, standin):
    standin.fail_ready("ImagePullBackOff", "cannot pull")
    spec = spec_for(kube)
    with pytest.raises(PermanentBackendError):
        kube.provision(spec)
    [res] = kube.list_resources()
    assert res.external_id == spec.external_id and res.state == "failed" and res.detail == "ImagePullBackOff: cannot pull"


# --------------------------------------------------------------------------- test_connection

def test_test_connection_summarises(kube, standin, live):
    summary = kube.test_connection()
    assert "tenants.hostpanel.dev/v1 is served" in summary and "1 tenants of ours" in summary
    assert [r["verb"] for r in standin.requests] == ["discovery", "list"]
    assert standin.requests[0]["path"] == "/apis/hostpanel.dev/v1"


def test_test_connection_names_a_missing_crd(standin):
    with pytest.raises(PermanentBackendError, match="no resource 'widgets'.*serves: tenants"):
        make_backend(standin.url, plural="widgets").test_connection()
    with pytest.raises(PermanentBackendError, match="does not serve example.com/v1; is the CRD installed"):
        make_backend(standin.url, group="example.com").test_connection()


def test_test_connection_reports_forbidden_and_bad_tokens(standin):
    standin.forbid_namespace(NAMESPACE)
    with pytest.raises(PermanentBackendError, match="403"):
        make_backend(standin.url).test_connection()
    with pytest.raises(PermanentBackendError, match="401"):
        make_backend(standin.url, token=TOKEN + "-wrong").test_connection()


def test_test_connection_unreachable_is_transient(unreachable_kube):
    with pytest.raises(TransientBackendError):
        unreachable_kube.test_connection()

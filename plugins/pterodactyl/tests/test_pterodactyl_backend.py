"""Behaviour of the Pterodactyl backend against the loopback stand-in (real HTTP, real client)."""
from __future__ import annotations

import pytest

from panel.backends import (NoCapacityError, PermanentBackendError, Resource, TransientBackendError,
                            ValidationError)
from panel.testing import after_provision, make_spec, provision_until_done
from panel_pterodactyl.standin import CLIENT_KEY, NON_ADMIN_KEY, ADMIN_KEY

MIB = 1024 * 1024


def spec_for(backend, options, *, customer_id=7, email=None, server_name="My server", region=None):
    params = {"server_name": server_name}
    if region:
        params["region"] = region
    spec = make_spec(backend, options=dict(options), params=params, email=email)
    if customer_id != spec.customer_id:
        import dataclasses
        spec = dataclasses.replace(spec, customer_id=customer_id)
    return spec


def provisioned(backend, options, **kw):
    spec = spec_for(backend, options, **kw)
    return after_provision(spec, provision_until_done(backend, spec))


# --------------------------------------------------------------------------- account link

def test_second_order_of_a_customer_reuses_the_account(standin, ptero, plan):
    first = provisioned(ptero, plan, customer_id=41, email="carol@example.com")
    second = provisioned(ptero, plan, customer_id=41, email="carol@example.com")
    users = [u for u in standin.users.values() if u["external_id"] == "hp-user-41"]
    assert len(users) == 1
    assert len(standin.calls("POST", "/api/application/users")) == 1
    owners = {standin.servers[int(s.resource_id)]["user"] for s in (first, second)}
    assert owners == {users[0]["id"]}
    assert first.backend_data["pterodactyl_user_id"] == second.backend_data["pterodactyl_user_id"] == users[0]["id"]
    assert second.backend_data["user_external_id"] == "hp-user-41"
    assert first.resource_id != second.resource_id


def test_existing_panel_user_is_found_by_exact_email(standin, ptero, plan):
    alice = standin.add_user("Alice@Example.com", "alice")
    spec = provisioned(ptero, plan, customer_id=5, email="alice@example.com")
    assert standin.servers[int(spec.resource_id)]["user"] == alice["id"]
    assert standin.calls("POST", "/api/application/users") == []


def test_partial_email_match_does_not_fool_the_exact_lookup(standin, ptero, plan):
    lookalikes = [standin.add_user("xbob@example.com", "xbob"), standin.add_user("bob@example.com.au", "bobau")]
    # The stand-in's filter really is a LIKE match: both lookalikes come back for bob's email.
    found = list(ptero.client.iter_list("users", {"filter[email]": "bob@example.com"}))
    assert {u["id"] for u in found} == {u["id"] for u in lookalikes}
    spec = provisioned(ptero, plan, customer_id=9, email="bob@example.com")
    owner = standin.users[standin.servers[int(spec.resource_id)]["user"]]
    assert owner["email"] == "bob@example.com"
    assert owner["id"] not in {u["id"] for u in lookalikes}
    assert owner["external_id"] == "hp-user-9"


# --------------------------------------------------------------------------- placement

def test_free_allocation_is_found_past_a_full_first_page(standin, make_backend, plan):
    node = standin.add_node("node-big", memory=16384, disk=102400, allocations=150, assigned=120, ip="10.0.9.9")
    backend = make_backend(nodes=[{"id": node["id"], "region": "big", "enabled": True}])
    spec = provisioned(backend, {**plan, "region": "big"})
    server = standin.servers[int(spec.resource_id)]
    ports = sorted((a["port"], a["id"]) for a in standin.allocations.values() if a["node"] == node["id"])
    assert server["allocation"] == ports[120][1], "the first free allocation is the 121st"
    assert spec.backend_data["address"] == f"10.0.9.9:{ports[120][0]}"
    pages = [c["query"].get("page") for c in standin.calls("GET", rf"/api/application/nodes/{node['id']}/allocations")]
    assert "2" in pages


def test_no_capacity_in_region(standin, ptero, plan):
    # node-a: 8192 MiB - 1024 headroom = 7168 free; node-b (64 GiB) is in maintenance.
    too_big = {**plan, "memory": 7169}
    with pytest.raises(NoCapacityError) as info:
        ptero.check_capacity(too_big, {"region": "us-east"})
    assert "no capacity in region us-east" in str(info.value)
    with pytest.raises(NoCapacityError, match="no capacity in region us-east"):
        ptero.provision(spec_for(ptero, too_big))
    assert standin.calls("POST", "/api/application/servers") == []
    ptero.check_capacity({**plan, "memory": 7168}, {"region": "us-east"})  # exactly fits
    with pytest.raises(NoCapacityError, match="no capacity in region mars"):
        ptero.check_capacity(plan, {"region": "mars"})


def test_placement_respects_allocated_overallocation_headroom_and_enabled(standin, make_backend, plan):
    node = standin.add_node("node-over", memory=4096, disk=10000, memory_overallocate=50, allocations=3)
    nodes = [{"id": node["id"], "region": "over", "enabled": True, "headroom_memory": 512}]
    backend = make_backend(nodes=nodes)
    # 4096 * 1.5 - 512 = 5632 MiB free: more than the node's physical memory, as Pterodactyl allows.
    backend.check_capacity({**plan, "memory": 5632}, {"region": "over"})
    provisioned(backend, {**plan, "memory": 4096, "region": "over"})
    # allocated 4096 now: 1536 left.
    backend.check_capacity({**plan, "memory": 1536}, {"region": "over"})
    with pytest.raises(NoCapacityError):
        backend.check_capacity({**plan, "memory": 1537}, {"region": "over"})
    disabled = make_backend(nodes=[{**nodes[0], "enabled": False}])
    with pytest.raises(NoCapacityError, match="disabled"):
        disabled.check_capacity({**plan, "memory": 1}, {"region": "over"})


def test_node_without_free_allocation_has_no_capacity(standin, make_backend, plan):
    node = standin.add_node("node-ports", allocations=2, assigned=2)
    backend = make_backend(nodes=[{"id": node["id"], "region": "ports", "enabled": True}])
    with pytest.raises(NoCapacityError, match="no free allocation"):
        backend.check_capacity(plan, {"region": "ports"})


def test_allocation_taken_meanwhile_picks_another(standin, ptero, plan):
    standin.reject_next_create([("allocation.default", "The selected allocation.default is invalid.", "unassigned")])
    spec = provisioned(ptero, plan)
    posts = standin.calls("POST", "/api/application/servers")
    assert len(posts) == 2
    assert posts[0]["body"]["allocation"]["default"] != posts[1]["body"]["allocation"]["default"]
    assert standin.servers[int(spec.resource_id)]["allocation"] == posts[1]["body"]["allocation"]["default"]


# --------------------------------------------------------------------------- create

def test_create_sends_egg_defaults_and_plan_limits(standin, ptero, plan):
    spec = provisioned(ptero, {**plan, "environment": {"BUILD_NUMBER": "123"}}, server_name="Carol's world")
    body = standin.calls("POST", "/api/application/servers")[0]["body"]
    assert body["external_id"] == spec.external_id
    assert body["egg"] == 39 and body["name"] == "Carol's world"
    assert body["docker_image"] == "ghcr.io/pterodactyl/yolks:java_17"
    assert body["startup"] == "java -jar {{SERVER_JARFILE}}"
    assert body["environment"] == {"SERVER_JARFILE": "server.jar", "BUILD_NUMBER": "123", "MINECRAFT_VERSION": ""}
    assert body["limits"] == {"memory": 1024, "swap": 0, "disk": 4096, "io": 500, "cpu": 100}
    assert body["feature_limits"] == {"databases": 0, "backups": 0, "allocations": 1}
    assert standin.servers[int(spec.resource_id)]["node"] == 1  # node-b is in maintenance


def test_422_lists_every_field_error(standin, ptero, plan):
    standin.reject_next_create([("limits.memory", "The limits.memory must be an integer.", "integer"),
                                ("environment.SERVER_JARFILE", "The Server Jar File variable format is invalid.",
                                 "regex")])
    with pytest.raises(PermanentBackendError) as info:
        ptero.provision(spec_for(ptero, plan))
    err = info.value
    assert not isinstance(err, TransientBackendError)
    assert set(err.fields) == {"limits.memory", "environment.SERVER_JARFILE"}
    assert "must be an integer" in err.fields["limits.memory"]
    assert "limits.memory" in str(err) and "environment.SERVER_JARFILE" in str(err)


def test_500_then_success_makes_one_server(standin, ptero, plan):
    standin.fail_next_creates(1, status=500)
    spec = spec_for(ptero, plan)
    with pytest.raises(TransientBackendError):
        ptero.provision(spec)
    assert len(standin.calls("POST", "/api/application/servers")) == 1, "a POST create must never auto-retry"
    assert standin.servers_with(spec.external_id) == []
    result = provision_until_done(ptero, spec)
    assert len(standin.servers_with(spec.external_id)) == 1
    assert result.resource_id == str(standin.servers_with(spec.external_id)[0]["id"])


def test_429_is_transient(standin, ptero, plan):
    standin.fail_next_creates(1, status=429)
    with pytest.raises(TransientBackendError, match="429"):
        ptero.provision(spec_for(ptero, plan))


def test_crash_between_create_and_record_then_retry_adopts(standin, ptero, plan):
    spec = spec_for(ptero, plan)
    lost = provision_until_done(ptero, spec)  # the worker dies before recording this
    retry = provision_until_done(ptero, spec)
    assert retry.resource_id == lost.resource_id
    assert retry.data["address"] == lost.data["address"]
    assert retry.data["identifier"] == lost.data["identifier"]
    assert len(standin.calls("POST", "/api/application/servers")) == 1
    assert len(standin.servers_with(spec.external_id)) == 1


def test_lost_create_answer_is_adopted_on_retry(standin, ptero, plan):
    standin.lose_next_create_response()
    spec = spec_for(ptero, plan)
    with pytest.raises(TransientBackendError):
        ptero.provision(spec)
    assert len(standin.servers_with(spec.external_id)) == 1  # it was made after all
    result = provision_until_done(ptero, spec)
    assert result.resource_id == str(standin.servers_with(spec.external_id)[0]["id"])
    assert len(standin.calls("POST", "/api/application/servers")) == 1
    assert len(standin.servers_with(spec.external_id)) == 1


# --------------------------------------------------------------------------- lifecycle

def test_suspend_twice_and_unsuspend_twice(standin, ptero, plan):
    spec = provisioned(ptero, plan)
    sid = int(spec.resource_id)
    ptero.suspend(spec)
    ptero.suspend(spec)
    assert standin.servers[sid]["suspended"] is True
    assert len(standin.calls("POST", rf"/api/application/servers/{sid}/suspend")) == 1
    assert ptero.details(spec)["state"] == "suspended"
    ptero.unsuspend(spec)
    ptero.unsuspend(spec)
    assert standin.servers[sid]["suspended"] is False
    assert len(standin.calls("POST", rf"/api/application/servers/{sid}/unsuspend")) == 1


def test_suspend_of_a_missing_server_is_permanent(ptero, plan):
    with pytest.raises(PermanentBackendError, match="no server"):
        ptero.suspend(spec_for(ptero, plan))


def test_terminate_of_a_server_already_gone_succeeds(standin, ptero, plan):
    spec = provisioned(ptero, plan)
    standin.delete_server(int(spec.resource_id))
    ptero.terminate(spec)
    assert standin.servers_with(spec.external_id) == []
    assert standin.calls("DELETE") == []


def test_terminate_frees_the_allocation(standin, ptero, plan):
    spec = provisioned(ptero, plan)
    alloc = spec.backend_data["allocation_id"]
    ptero.terminate(spec)
    assert standin.allocations[alloc]["server"] is None
    assert [c["path"] for c in standin.calls("DELETE")] == [f"/api/application/servers/{spec.resource_id}"]


def test_force_delete_only_when_the_operator_confirmed(standin, make_backend, plan):
    careful = make_backend()
    spec = provisioned(careful, plan)
    standin.fail_next_deletes(1)
    with pytest.raises(TransientBackendError, match="force_delete"):
        careful.terminate(spec)
    assert len(standin.servers_with(spec.external_id)) == 1
    assert standin.calls("DELETE", r".*/force") == []

    standin.fail_next_deletes(1)
    make_backend(force_delete=True).terminate(spec)
    assert standin.servers_with(spec.external_id) == []
    assert len(standin.calls("DELETE", r".*/force")) == 1

    other = provisioned(careful, plan)
    standin.fail_next_deletes(1)
    careful.terminate(other, force=True)
    assert standin.servers_with(other.external_id) == []


def test_change_plan_patches_build_with_allocation_and_feature_limits(standin, ptero, plan):
    spec = provisioned(ptero, plan)
    sid = int(spec.resource_id)
    new = ptero.validate_plan_options({**plan, "memory": 2048, "disk": 8192, "cpu": 200, "backups": 2})
    result = ptero.change_plan(spec, new)
    body = standin.calls("PATCH", rf"/api/application/servers/{sid}/build")[0]["body"]
    assert body["allocation"] == standin.servers[sid]["allocation"]
    assert body["feature_limits"] == {"databases": 0, "backups": 2, "allocations": 1}
    assert standin.servers[sid]["limits"]["memory"] == 2048
    assert standin.servers[sid]["limits"]["cpu"] == 200
    assert result.resource_id == spec.resource_id and result.data["limits"]["disk"] == 8192
    with pytest.raises(NoCapacityError):
        ptero.change_plan(spec, {**new, "memory": 8000})
    assert standin.servers[sid]["limits"]["memory"] == 2048


# --------------------------------------------------------------------------- what customers see

def test_details_show_address_state_and_panel_link(standin, ptero, plan):
    spec = provisioned(ptero, plan)
    sid = int(spec.resource_id)
    details = ptero.details(spec)
    alloc = standin.allocations[standin.servers[sid]["allocation"]]
    assert details["address"] == f"{alloc['ip']}:{alloc['port']}"
    assert details["state"] == "running"
    assert details["panel_link"] == f"{standin.url}/server/{standin.servers[sid]['identifier']}"
    standin.set_status(sid, "installing")
    assert ptero.details(spec)["state"] == "installing"
    standin.set_status(sid, "install_failed")
    assert ptero.details(spec)["state"] == "install_failed"
    standin.delete_server(sid)
    assert ptero.details(spec)["state"] == "deleted"


def test_details_when_the_panel_is_down_show_stored_data(ptero, ptero_unreachable, plan):
    spec = provisioned(ptero, plan)
    details = ptero_unreachable.details(spec)
    assert details["state"] == "unknown"
    assert details["address"] == spec.backend_data["address"]


def test_usage_with_a_client_key_is_live(standin, make_backend, plan):
    backend = make_backend(client_api_key=CLIENT_KEY)
    spec = provisioned(backend, plan)
    standin.set_stats(spec.backend_data["identifier"], memory_bytes=300 * MIB, cpu_absolute=37.5,
                      disk_bytes=900 * MIB, network_rx_bytes=1234, network_tx_bytes=5678, uptime=90_000)
    usage = backend.usage(spec)
    metrics = {m.name: m for m in usage.metrics}
    assert (metrics["memory"].value, metrics["memory"].unit, metrics["memory"].limit) == (300 * MIB, "bytes", 1024 * MIB)
    assert (metrics["cpu"].value, metrics["cpu"].unit) == (37.5, "%")
    assert (metrics["disk"].value, metrics["disk"].limit) == (900 * MIB, 4096 * MIB)
    assert (metrics["network_rx"].value, metrics["network_tx"].value) == (1234, 5678)
    assert (metrics["uptime"].value, metrics["uptime"].unit) == (90.0, "seconds")
    client_calls = standin.calls("GET", r"/api/client/servers/.*/resources")
    assert client_calls and client_calls[0]["key"] == "client"


def test_usage_without_a_client_key_shows_plan_limits(standin, ptero, plan):
    spec = provisioned(ptero, plan)
    usage = ptero.usage(spec)
    metrics = {m.name: (m.value, m.unit) for m in usage.metrics}
    assert metrics == {"memory_limit": (1024, "MiB"), "disk_limit": (4096, "MiB"), "cpu_limit": (100, "%")}
    assert "client_api_key" in usage.note
    assert standin.calls(path=r"/api/client.*") == []


def test_application_key_as_client_key_is_refused(standin, make_backend, plan):
    backend = make_backend(client_api_key=ADMIN_KEY)
    spec = provisioned(backend, plan)
    with pytest.raises(PermanentBackendError, match="403") as info:
        backend.usage(spec)
    assert ADMIN_KEY not in str(info.value)


# --------------------------------------------------------------------------- plan and order validation

def test_plan_options_are_checked_against_egg_variables(ptero, plan):
    clean = ptero.validate_plan_options(plan)
    assert (clean["nest"], clean["egg"]) == (1, 39)
    with pytest.raises(ValidationError) as info:
        ptero.validate_plan_options({**plan, "environment": {"SERVER_JARFILE": "server.zip"}})
    assert list(info.value.errors) == ["environment.SERVER_JARFILE"]
    assert "regex" in info.value.errors["environment.SERVER_JARFILE"]
    with pytest.raises(ValidationError) as info:
        ptero.validate_plan_options({**plan, "environment": {"BUILD_NUMBER": "x" * 21, "NOPE": "1"}})
    assert set(info.value.errors) == {"environment.BUILD_NUMBER", "environment.NOPE"}
    ptero.validate_plan_options({**plan, "environment": {"SERVER_JARFILE": "paper-1.20.jar"}})


def test_plan_options_name_missing_or_unknown_eggs(ptero, plan):
    with pytest.raises(ValidationError) as info:
        ptero.validate_plan_options({"memory": 1024, "disk": 1024})
    assert {"nest", "egg"} <= set(info.value.errors)
    with pytest.raises(ValidationError) as info:
        ptero.validate_plan_options({**plan, "game": "chess"})
    assert "game" in info.value.errors and "minecraft" in info.value.errors["game"]
    with pytest.raises(ValidationError) as info:
        ptero.validate_plan_options({**plan, "game": None, "nest": 1, "egg": 99})
    assert info.value.errors == {"egg": "egg 99 not found in nest 1"}
    with pytest.raises(ValidationError) as info:
        ptero.validate_plan_options({**plan, "io": 5, "memory": -1})
    assert {"io", "memory"} <= set(info.value.errors)


def test_order_params_region(ptero, plan):
    clean_plan = ptero.validate_plan_options(plan)
    assert ptero.validate_order_params({"server_name": "x"}, clean_plan)["region"] == "us-east"
    assert ptero.validate_order_params({"server_name": "x", "region": "eu"}, clean_plan)["region"] == "eu"
    with pytest.raises(ValidationError) as info:
        ptero.validate_order_params({"server_name": "x", "region": "mars"}, clean_plan)
    assert "region" in info.value.errors
    with pytest.raises(ValidationError) as info:
        ptero.validate_order_params({"region": "eu"}, clean_plan)
    assert "server_name" in info.value.errors


def test_customer_region_choice_places_there(standin, ptero, plan):
    spec = provisioned(ptero, plan, region="eu")
    assert standin.servers[int(spec.resource_id)]["node"] == 3
    assert spec.backend_data["region"] == "eu"


def test_invalid_nodes_setting_fails_placement_but_not_terminate(standin, make_backend, ptero, plan):
    spec = provisioned(ptero, plan)
    broken = make_backend(nodes=[{"id": 1, "region": "US EAST", "headroom_memory": -5}])
    with pytest.raises(PermanentBackendError) as info:
        broken.check_capacity(plan, {"region": "us-east"})
    assert {"nodes[0].region", "nodes[0].headroom_memory"} <= set(info.value.fields)
    broken.terminate(spec)
    assert standin.servers_with(spec.external_id) == []


# --------------------------------------------------------------------------- operator tools

def test_list_resources_reports_only_our_servers(standin, ptero, plan):
    mine = provisioned(ptero, plan)
    suspended = provisioned(ptero, plan)
    ptero.suspend(suspended)
    standin.set_status(int(mine.resource_id), None)
    standin.add_server("whmcs-77", 1)
    standin.add_server(None, 1)
    standin.add_server("xhp-not-ours", 1)  # contains the prefix, does not start with it
    resources = {r.external_id: r for r in ptero.list_resources()}
    assert set(resources) == {mine.external_id, suspended.external_id}
    assert resources[mine.external_id] == Resource(mine.external_id, mine.resource_id, "active",
                                                   resources[mine.external_id].detail)
    assert resources[suspended.external_id].state == "suspended"


def test_test_connection_checks_key_and_root_admin_and_lists_nodes(ptero, make_backend):
    line = ptero.test_connection()
    assert "3 node(s)" in line and "node-a (us-east, enabled" in line and "maintenance" in line
    with pytest.raises(PermanentBackendError, match="root admin"):
        make_backend(application_api_key=NON_ADMIN_KEY).test_connection()
    with pytest.raises(PermanentBackendError, match="401"):
        make_backend(application_api_key="ptla_nope").test_connection()
    assert "client key OK" in make_backend(client_api_key=CLIENT_KEY).test_connection()
    with pytest.raises(PermanentBackendError, match="client_api_key"):
        make_backend(client_api_key=ADMIN_KEY).test_connection()


def test_no_key_in_repr_or_errors(make_backend, ptero_rejecting, plan):
    backend = make_backend(client_api_key=CLIENT_KEY)
    assert ADMIN_KEY not in repr(backend) and CLIENT_KEY not in repr(backend)
    assert ADMIN_KEY not in repr(backend.client)
    with pytest.raises(PermanentBackendError) as info:
        ptero_rejecting.test_connection()
    assert "ptla_wrong" not in str(info.value) + repr(info.value)

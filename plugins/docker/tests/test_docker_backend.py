"""The Docker backend against a real Docker Engine, a real PostgreSQL and a stand-in app image."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from importlib.metadata import entry_points

import pytest
from docker_backend_testkit import PREFIX, new_space

from panel.backends import (PermanentBackendError, Secret, ServiceSpec,
                            TransientBackendError, ValidationError, schema_fields)
from panel.testing import after_provision, free_port, make_spec, wait_for
from panel_docker import DockerBackend, register_backends

MIB = 1024 * 1024
OPTS = {"memory_mib": 128, "cpus": 0.5}


def spec_for(backend, space=None, **extra):
    return make_spec(backend, options=dict(OPTS), params={"space": space or new_space()}, **extra)


def env_of(container) -> dict:
    container.reload()
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def ours(client, spec):
    return client.containers.list(all=True, filters={"label": f"panel.service={spec.external_id}"})


def scram_matches(verifier: str, password: str) -> bool:
    """Does a PostgreSQL SCRAM-SHA-256 verifier (pg_authid.rolpassword) belong to ``password``?"""
    _, rest = verifier.split("$", 1)
    iter_salt, keys = rest.split("$")
    iterations, salt = iter_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


def role_password_is(pg, role: str, password: str) -> bool:
    with pg.cursor() as cur:
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
        row = cur.fetchone()
    return bool(row and row[0] and scram_matches(row[0], password))


def db_exists(pg, name: str) -> bool:
    with pg.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def role_exists(pg, name: str) -> bool:
    with pg.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        return cur.fetchone() is not None


def volume_names(client, spec) -> list[str]:
    return sorted(v.name for v in client.volumes.list(filters={"label": f"panel.service={spec.external_id}"}))


def tenant_conn(postgres_server, database):
    import psycopg2

    conn = psycopg2.connect(postgres_server.admin_url, dbname=database)
    conn.autocommit = True
    return conn


# --------------------------------------------------------------------------- provision

def test_provision_builds_database_volumes_and_container(backend, docker_client, pg, redis_server,
                                                         test_network):
    space = new_space("acme")
    spec = spec_for(backend, space)
    result = backend.provision(spec)
    ident = f"{PREFIX}_{space}"
    container = docker_client.containers.get(result.resource_id)
    assert container.name == f"{PREFIX}-{space}" and container.status == "running"

    env = env_of(container)
    url = f"https://{space}.communities.test"
    password, jwt = result.secrets["database_password"], result.secrets["jwt_secret"]
    assert len(password) >= 24 and len(jwt) >= 48
    assert env["MAIN_URL"] == env["FRONTEND_URL"] == url
    assert env["NEXT_PUBLIC_BACKEND_URL"] == url + "/api"
    assert env["JWT_SECRET"] == jwt
    assert env["DATABASE_URL"] == f"postgresql://{ident}:{password}@db.internal:5432/{ident}"
    assert env["REDIS_URL"] == redis_server.url
    assert (env["IS_GENERAL"], env["STORAGE_PROVIDER"], env["UPLOAD_DIRECTORY"]) == ("true", "local", "/uploads")
    assert env["DISABLE_REGISTRATION"] == "true"
    assert env["COMMUNITY"] == space and env["PORT"] == "5000"  # env_template placeholders

    labels = container.labels
    router = f"{PREFIX}-{space}"
    assert labels["panel.service"] == spec.external_id
    assert labels[f"traefik.http.routers.{router}.rule"] == f"Host(`{space}.communities.test`)"
    assert labels[f"traefik.http.routers.{router}.entrypoints"] == "websecure"
    assert labels[f"traefik.http.services.{router}.loadbalancer.server.port"] == "5000"
    assert labels["traefik.docker.network"] == test_network and labels["traefik.enable"] == "true"

    host = container.attrs["HostConfig"]
    assert host["Memory"] == 128 * MIB and host["MemorySwap"] == 128 * MIB
    assert (host["CpuPeriod"], host["CpuQuota"]) == (100_000, 50_000)
    assert host["RestartPolicy"]["Name"] == "unless-stopped" and host["Init"] is True
    mounts = {m["Destination"]: m["Name"] for m in container.attrs["Mounts"]}
    assert mounts == {"/config": f"{PREFIX}-{space}-config", "/uploads": f"{PREFIX}-{space}-uploads"}
    assert volume_names(docker_client, spec) == sorted(mounts.values())

    with pg.cursor() as cur:
        cur.execute("SELECT pg_get_userbyid(datdba), has_database_privilege('public', datname, 'CONNECT') "
                    "FROM pg_database WHERE datname = %s", (ident,))
        assert cur.fetchone() == (ident, False)
        cur.execute("SELECT rolsuper, rolcreatedb, shobj_description(oid, 'pg_authid') FROM pg_roles "
                    "WHERE rolname = %s", (ident,))
        assert cur.fetchone() == (False, False, f"panel.service={spec.external_id}")
    assert role_password_is(pg, ident, password)

    # The app answers through the published loopback port.
    port = container.ports["5000/tcp"][0]["HostPort"]
    assert container.ports["5000/tcp"][0]["HostIp"] == "127.0.0.1"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/", timeout=5) as response:
        assert response.read().decode().strip() == "App is running!"

    recorded = after_provision(spec, result)
    details = backend.details(recorded)
    assert details["url"] == url and details["state"] == "active" and details["health"] == "healthy"
    shown = json.dumps(details) + json.dumps(dict(result.data)) + repr(result)
    assert password not in shown and jwt not in shown
    assert result.data["database"] == ident and result.data["url"] == url


def test_retry_after_crash_between_container_create_and_record(backend, make_backend, docker_client,
                                                               pg, monkeypatch):
    spec = spec_for(backend)

    def worker_dies(*args, **kwargs):
        raise KeyboardInterrupt("worker killed after the container was created")

    monkeypatch.setattr(backend, "_wait_healthy", worker_dies)
    with pytest.raises(KeyboardInterrupt):
        backend.provision(spec)
    made = ours(docker_client, spec)
    assert len(made) == 1  # the container exists, but its result was never recorded

    retry = make_backend().provision(spec)  # a new worker, the bare spec again
    assert ours(docker_client, spec)[0].id == made[0].id == retry.resource_id
    assert len(ours(docker_client, spec)) == 1 and len(volume_names(docker_client, spec)) == 2
    env = env_of(made[0])
    assert env["JWT_SECRET"] == retry.secrets["jwt_secret"]
    assert retry.secrets["database_password"] in env["DATABASE_URL"]
    assert role_password_is(pg, retry.data["database_user"], retry.secrets["database_password"])


def test_retry_after_crash_before_the_container_resets_or_reuses_the_role_password(
        backend, make_backend, docker_client, pg, monkeypatch):
    spec = spec_for(backend)
    monkeypatch.setattr(backend, "_create_container",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("died")))
    with pytest.raises(KeyboardInterrupt):
        backend.provision(spec)
    role = f"{PREFIX}_{spec.params['space']}"
    assert db_exists(pg, role) and role_exists(pg, role) and ours(docker_client, spec) == []

    # The retry carries secrets recorded by an earlier result: the existing role gets them again.
    given = dataclasses.replace(spec, secrets={"database_password": Secret("given-password-123"),
                                               "jwt_secret": Secret("given-jwt-secret-456")})
    result = make_backend().provision(given)
    assert result.secrets == {"database_password": "given-password-123", "jwt_secret": "given-jwt-secret-456"}
    assert role_password_is(pg, role, "given-password-123")
    assert env_of(ours(docker_client, spec)[0])["JWT_SECRET"] == "given-jwt-secret-456"


def test_existing_role_without_recorded_secret_gets_a_new_password(backend, make_backend, pg, monkeypatch):
    spec = spec_for(backend)
    monkeypatch.setattr(backend, "_create_container",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("died")))
    with pytest.raises(KeyboardInterrupt):
        backend.provision(spec)
    role = f"{PREFIX}_{spec.params['space']}"
    with pg.cursor() as cur:
        cur.execute(f'ALTER ROLE "{role}" PASSWORD %s', ("lost-password",))
    result = make_backend().provision(spec)
    assert result.secrets["database_password"] != "lost-password"
    assert role_password_is(pg, role, result.secrets["database_password"])


def test_health_timeout_is_permanent(make_backend, docker_client):
    # The app listens on 5999 but the backend waits for 5000: nothing ever answers.
    backend = make_backend(health_timeout_seconds=2, env_template={"PORT": "5999"})
    spec = spec_for(backend)
    started = time.monotonic()
    with pytest.raises(PermanentBackendError) as info:
        backend.provision(spec)
    assert time.monotonic() - started < 15
    assert "did not answer /api/ within 2 s" in str(info.value)
    assert not isinstance(info.value, TransientBackendError)
    assert len(ours(docker_client, spec)) == 1  # left in place for the operator's retry


def test_name_collision_with_a_foreign_container(backend, docker_client, pg, standin_image):
    space = new_space("taken")
    foreign = docker_client.containers.create(standin_image, name=f"{PREFIX}-{space}")
    spec = spec_for(backend, space="placeholder")
    spec = dataclasses.replace(spec, params={"space": space})
    with pytest.raises(PermanentBackendError) as info:
        backend.provision(spec)
    assert f"{PREFIX}-{space}" in str(info.value) and "collision" in str(info.value)
    foreign.reload()
    assert foreign.status == "created" and "panel.service" not in foreign.labels  # untouched
    assert not db_exists(pg, f"{PREFIX}_{space}")  # refused before anything was made
    with pytest.raises(ValidationError) as invalid:
        backend.validate_order_params({"space": space}, OPTS)
    assert "taken" in invalid.value.errors["space"]


def test_name_collision_with_another_service(backend, docker_client):
    first = spec_for(backend)
    backend.provision(first)
    second = dataclasses.replace(spec_for(backend), params={"space": first.params["space"]})
    with pytest.raises(PermanentBackendError) as info:
        backend.provision(second)
    assert first.external_id in str(info.value)
    assert ours(docker_client, second) == [] and len(ours(docker_client, first)) == 1


def test_missing_image_is_permanent_and_makes_nothing(make_backend, pg):
    backend = make_backend(image=f"{PREFIX}/nowhere:1.0")
    spec = spec_for(backend)
    with pytest.raises(PermanentBackendError) as info:
        backend.provision(spec)
    assert f"{PREFIX}/nowhere:1.0" in str(info.value) and "not present" in str(info.value)
    assert not db_exists(pg, f"{PREFIX}_{spec.params['space']}")
    with pytest.raises(PermanentBackendError):
        backend.test_connection()


def test_without_publishing_the_health_check_uses_the_network_ip(make_backend, docker_client):
    backend = make_backend(publish_host="")
    spec = spec_for(backend)
    result = backend.provision(spec)
    container = docker_client.containers.get(result.resource_id)
    assert not container.attrs["HostConfig"].get("PortBindings")
    assert backend.details(after_provision(spec, result))["health"] == "healthy"


def test_a_non_superuser_admin_with_createdb_and_createrole_works(make_backend, pg, postgres_server):
    admin = f"{PREFIX}_admin"
    with pg.cursor() as cur:
        cur.execute(f'CREATE ROLE "{admin}" LOGIN CREATEDB CREATEROLE')
    url = postgres_server.admin_url.replace("panel_admin@", f"{admin}@")
    backend = make_backend(postgres_url=url)
    assert "CREATEDB, CREATEROLE" in backend.test_connection()
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    assert db_exists(pg, recorded.backend_data["database"])
    backend.terminate(recorded)
    assert not db_exists(pg, recorded.backend_data["database"])
    assert not role_exists(pg, recorded.backend_data["database_user"])


# --------------------------------------------------------------------------- suspend / terminate

def test_suspend_unsuspend_and_reconcile(backend, docker_client, standin_image):
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    docker_client.containers.create(standin_image, name=f"{PREFIX}-unrelated")  # not ours

    backend.suspend(recorded)
    assert docker_client.containers.get(recorded.resource_id).status == "exited"
    details = backend.details(recorded)
    assert (details["state"], details["health"]) == ("suspended", "stopped")
    listed = {r.external_id: r for r in backend.list_resources()}
    mine = listed[spec.external_id]
    assert (mine.external_id, mine.resource_id, mine.state) == (spec.external_id, recorded.resource_id, "suspended")
    assert mine.params == dict(spec.params) and mine.suspended_at is not None  # what adoption reads
    assert all(not r.detail.startswith(f"{PREFIX}-unrelated") for r in listed.values())

    backend.unsuspend(recorded)
    assert docker_client.containers.get(recorded.resource_id).status == "running"
    assert {r.external_id: r.state for r in backend.list_resources()}[spec.external_id] == "active"
    assert backend.details(recorded)["health"] == "healthy"


def test_suspend_of_a_missing_container_is_permanent(backend):
    with pytest.raises(PermanentBackendError) as info:
        backend.suspend(spec_for(backend))
    assert "no container" in str(info.value)


def test_terminate_after_the_container_was_removed_by_hand(backend, docker_client, pg):
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    docker_client.containers.get(recorded.resource_id).remove(force=True)
    backend.terminate(recorded)
    assert volume_names(docker_client, spec) == []
    assert not db_exists(pg, recorded.backend_data["database"])
    assert not role_exists(pg, recorded.backend_data["database_user"])
    backend.terminate(recorded)  # and again: still a success
    assert backend.details(recorded)["state"] == "absent"


def test_terminate_never_drops_what_another_service_owns(backend, docker_client, pg):
    owner = spec_for(backend)
    backend.provision(owner)
    intruder = dataclasses.replace(spec_for(backend), params={"space": owner.params["space"]})
    backend.terminate(intruder)  # nothing of the intruder's exists
    assert len(ours(docker_client, owner)) == 1 and len(volume_names(docker_client, owner)) == 2
    assert db_exists(pg, f"{PREFIX}_{owner.params['space']}")


def test_retention_keeps_volumes_and_database_until_the_window_passes(make_backend, docker_client, pg):
    backend = make_backend(retention_days=2)
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    database = recorded.backend_data["database"]

    backend.terminate(recorded)
    assert ours(docker_client, spec) == []
    assert len(volume_names(docker_client, spec)) == 2 and db_exists(pg, database)
    with pg.cursor() as cur:
        cur.execute("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", (database,))
        assert "panel.terminated_at=" in cur.fetchone()[0]
    with pytest.raises(ValidationError):  # the space stays taken while its data is retained
        backend.validate_order_params({"space": spec.params["space"]}, OPTS)

    backend.terminate(recorded)  # within the window: still kept
    assert db_exists(pg, database)
    now = datetime.now(timezone.utc)
    assert backend.purge_expired(now=now + timedelta(days=1)) == []
    assert db_exists(pg, database)
    assert backend.purge_expired(now=now + timedelta(days=3)) == [spec.external_id]
    assert volume_names(docker_client, spec) == [] and not db_exists(pg, database)
    assert not role_exists(pg, database)


def test_terminate_after_the_window_purges(make_backend, docker_client, pg):
    backend = make_backend(retention_days=1)
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    backend.terminate(recorded)
    role = recorded.backend_data["database_user"]
    old = (datetime.now(timezone.utc) - timedelta(days=2)).isoformat()
    with pg.cursor() as cur:
        cur.execute(f'COMMENT ON ROLE "{role}" IS %s',
                    (f"panel.service={spec.external_id};panel.terminated_at={old}",))
    backend.terminate(recorded)
    assert volume_names(docker_client, spec) == [] and not db_exists(pg, role)


def test_purge_forces_teardown_despite_retention(make_backend, docker_client, pg):
    backend = make_backend(retention_days=30)
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    backend.purge(recorded)
    assert ours(docker_client, spec) == [] and volume_names(docker_client, spec) == []
    assert not db_exists(pg, recorded.backend_data["database"])


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("space", ["-abc", "abc-", "a_b", "a.b", "ab c", "é", "x" * 64])
def test_space_must_be_a_dns_label(backend, space):
    with pytest.raises(ValidationError) as info:
        backend.validate_order_params({"space": space}, OPTS)
    assert set(info.value.errors) == {"space"}


def test_space_name_rules(make_backend, backend):
    assert backend.validate_order_params({"space": " Acme-42 "}, OPTS) == {"space": "acme-42"}
    for reserved in ("www", "api", "admin", "mail"):
        with pytest.raises(ValidationError) as info:
            backend.validate_order_params({"space": reserved}, OPTS)
        assert "reserved" in info.value.errors["space"]
    with pytest.raises(ValidationError) as info:
        backend.validate_order_params({}, OPTS)
    assert info.value.errors == {"space": "is required"}
    # the name must also fit a PostgreSQL identifier: <prefix>_<space> <= 63 characters
    limit = 63 - len(PREFIX) - 1
    assert backend.validate_order_params({"space": "a" * limit}, OPTS)
    with pytest.raises(ValidationError) as info:
        backend.validate_order_params({"space": "a" * (limit + 1)}, OPTS)
    assert str(limit) in info.value.errors["space"]
    custom = make_backend(reserved_names="shop, Blog")
    assert custom.validate_order_params({"space": "www"}, OPTS) == {"space": "www"}
    with pytest.raises(ValidationError):
        custom.validate_order_params({"space": "blog"}, OPTS)


def test_space_taken_by_an_existing_database(backend, pg):
    space = new_space("db")
    with pg.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{PREFIX}_{space}"')
    with pytest.raises(ValidationError) as info:
        backend.validate_order_params({"space": space}, OPTS)
    assert "taken" in info.value.errors["space"]
    # and provision refuses to adopt a database it did not make
    with pytest.raises(PermanentBackendError) as error:
        backend.provision(dataclasses.replace(spec_for(backend), params={"space": space}))
    assert f"{PREFIX}_{space}" in str(error.value)


def test_validation_still_checks_the_format_when_the_engine_is_down(make_backend):
    backend = make_backend(docker_url=f"tcp://127.0.0.1:{free_port()}", api_timeout_seconds=3)
    assert backend.validate_order_params({"space": "fine"}, OPTS) == {"space": "fine"}
    with pytest.raises(ValidationError):
        backend.validate_order_params({"space": "admin"}, OPTS)


# --------------------------------------------------------------------------- usage

def test_usage_units_storage_and_post_count(make_backend, docker_client, postgres_server):
    backend = make_backend(usage_cache_seconds=300)
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    container = docker_client.containers.get(recorded.resource_id)
    code, _ = container.exec_run(["/bin/busybox", "dd", "if=/dev/zero", "of=/uploads/blob", "bs=1024",
                                  "count=512"])
    assert code == 0

    usage = backend.usage(recorded)
    metrics = {m.name: m for m in usage.metrics}
    assert (metrics["cpu"].unit, metrics["memory"].unit, metrics["storage"].unit) == ("%", "bytes", "bytes")
    assert 0 <= metrics["cpu"].value <= 100 * 8 and metrics["cpu"].limit == 50
    assert 0 < metrics["memory"].value <= 128 * MIB and metrics["memory"].limit == 128 * MIB
    assert metrics["storage"].value >= 512 * 1024
    # the billable figures: storage in GiB (the same bytes), posts 0 before Postiz made its schema
    assert metrics["storage_gib"].unit == "GiB"
    assert metrics["storage_gib"].value == round(metrics["storage"].value / 1024 ** 3, 6) > 0
    assert (metrics["posts"].value, metrics["posts"].unit) == (0, "count") and '"Post"' not in usage.note

    # Postiz's schema appears: the post count comes from the tenant's own database.
    conn = tenant_conn(postgres_server, recorded.backend_data["database"])
    with conn.cursor() as cur:
        cur.execute('CREATE TABLE "Post" (id serial PRIMARY KEY, content text, "deletedAt" timestamp)')
        cur.execute('INSERT INTO "Post" (content, "deletedAt") VALUES (%s, NULL), (%s, NULL), (%s, now())',
                    ("a", "b", "c"))
    conn.close()

    cached = backend.usage(recorded)
    assert cached is usage  # served from the cache: the very object, no new stats call
    fresh = make_backend(usage_cache_seconds=0).usage(recorded)
    posts = {m.name: m for m in fresh.metrics}["posts"]
    assert (posts.value, posts.unit) == (2, "count")  # the soft-deleted one does not count
    json.dumps(fresh.to_json())


def test_stale_usage_is_served_at_once_and_refreshed_in_the_background(make_backend):
    backend = make_backend(usage_cache_seconds=1)
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    first = backend.usage(recorded)
    time.sleep(1.1)  # past usage_cache_seconds: the cached reading is stale now
    assert backend.usage(recorded) is first  # stale, served as is: the refresh runs in the background
    assert wait_for(lambda: backend.usage(recorded) is not first, 10, 0.1), "the background refresh never landed"
    assert backend.usage(recorded).collected_at > first.collected_at


def test_usage_of_a_suspended_service_reports_zero_cpu_and_memory(backend):
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    backend.suspend(recorded)
    metrics = {m.name: m.value for m in backend.usage(recorded).metrics}
    assert metrics["cpu"] == 0 and metrics["memory"] == 0 and "storage" in metrics


# --------------------------------------------------------------------------- plan, settings, plugin

def test_change_plan_updates_the_limits_in_place(backend, docker_client):
    spec = spec_for(backend)
    recorded = after_provision(spec, backend.provision(spec))
    assert backend.change_plan(recorded, {"memory_mib": 256, "cpus": 1.5}) is None
    host = docker_client.containers.get(recorded.resource_id).attrs["HostConfig"]
    assert (host["Memory"], host["CpuQuota"]) == (256 * MIB, 150_000)
    assert docker_client.containers.get(recorded.resource_id).status == "running"


def test_test_connection_checks_engine_image_and_rights(backend, make_backend, norights_url, standin_image):
    summary = backend.test_connection()
    assert standin_image in summary and "superuser" in summary
    with pytest.raises(PermanentBackendError) as info:
        make_backend(postgres_url=norights_url).test_connection()
    assert "CREATEDB" in str(info.value) and "CREATEROLE" in str(info.value)
    assert "wrong-pass" not in str(info.value)
    with pytest.raises(TransientBackendError):
        make_backend(docker_url=f"tcp://127.0.0.1:{free_port()}", api_timeout_seconds=3).test_connection()
    with pytest.raises(PermanentBackendError) as info:
        make_backend(network=f"{PREFIX}-no-such-net").test_connection()
    assert "does not exist" in str(info.value)


def test_unreachable_postgres_is_transient(make_backend):
    backend = make_backend(postgres_url=f"postgresql://admin:pw-secret-1@127.0.0.1:{free_port()}/postgres")
    with pytest.raises(TransientBackendError) as info:
        backend.provision(spec_for(backend))
    assert "pw-secret-1" not in str(info.value)


def test_invalid_settings_are_reported_by_each_operation(make_backend):
    backend = make_backend(env_template={"X": "{nope}"})
    with pytest.raises(PermanentBackendError) as info:
        backend.provision(make_spec(make_backend(), options=OPTS, params={"space": new_space()}))
    assert "env_template" in str(info.value) and "nope" in str(info.value)
    with pytest.raises(PermanentBackendError):
        make_backend(base_domain=None).terminate(make_spec(make_backend(), options=OPTS,
                                                           params={"space": new_space()}))


def test_secret_env_reaches_the_container_but_no_display(make_backend, docker_client, caplog):
    caplog.set_level(logging.DEBUG)
    backend = make_backend(secret_env={"OPENAI_API_KEY": "sk-very-secret-42"},
                           postiz_env=False, env_template={"PORT": "{container_port}",
                                                           "DB": "{database_url}", "APP_KEY": "{jwt_secret}"})
    spec = spec_for(backend)
    result = backend.provision(spec)
    env = env_of(docker_client.containers.get(result.resource_id))
    assert env["OPENAI_API_KEY"] == "sk-very-secret-42" and "MAIN_URL" not in env  # another app's env
    assert env["APP_KEY"] == result.secrets["jwt_secret"]
    assert isinstance(backend.settings["secret_env"], Secret)
    haystack = repr(backend) + json.dumps(backend.details(after_provision(spec, result))) + caplog.text
    assert "sk-very-secret-42" not in haystack
    # a retry adopts the same container, reading the secrets back from the generic template
    assert make_backend(**{k: v for k, v in backend.settings.items()}).provision(spec).resource_id \
        == result.resource_id


def test_the_plugin_registers_the_backend():
    registered = []
    register_backends(registered.append)
    assert registered == [DockerBackend]
    points = [ep for ep in entry_points(group="panel") if ep.name == "docker"]
    assert points and points[0].value == "panel_docker"
    assert DockerBackend.supports("list_resources") and DockerBackend.supports("change_plan")
    names = {f.name: f for f in schema_fields(DockerBackend.Settings)}
    assert names["postgres_url"].secret and names["redis_url"].secret and names["secret_env"].secret
    assert names["image"].default == "ghcr.io/gitroomhq/postiz-app:latest"
    assert names["container_port"].default == 5000 and names["health_path"].default == "/api/"


# --------------------------------------------------------------------------- error mapping (no engine needed)

def _offline_backend():
    return DockerBackend({"base_domain": "communities.test", "redis_url": "redis://:redis-pw-77@r:6379/0",
                          "postgres_url": "postgresql://admin:pg-admin-pw-99@127.0.0.1:9/postgres",
                          "docker_url": "tcp://127.0.0.1:9"})  # never contacted


def _api_error(status: int, explanation: str):
    import docker.errors
    import requests

    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("engine said no", response=response, explanation=explanation)


@pytest.mark.parametrize("status, kind", [(500, TransientBackendError), (503, TransientBackendError),
                                          (429, TransientBackendError), (409, PermanentBackendError),
                                          (400, PermanentBackendError)])
def test_docker_api_errors_are_typed_and_scrubbed(status, kind):
    backend = _offline_backend()
    with pytest.raises(kind) as info:
        with backend._docker_errors("create"):
            raise _api_error(status, "bad env DATABASE_URL=postgresql://admin:pg-admin-pw-99@db and redis-pw-77")
    assert isinstance(info.value, kind)  # the two kinds are siblings: never both
    assert str(status) in str(info.value)
    assert "pg-admin-pw-99" not in str(info.value) and "redis-pw-77" not in str(info.value)


def test_postgres_errors_are_typed_and_scrubbed():
    import psycopg2

    backend = _offline_backend()
    refused = backend._pg_error(psycopg2.OperationalError(
        'connection failed: FATAL:  password authentication failed for user "admin"'), "provision")
    assert isinstance(refused, PermanentBackendError) and not isinstance(refused, TransientBackendError)
    down = backend._pg_error(psycopg2.OperationalError(
        "connection to server at \"db\" (10.0.0.9), port 5432 failed: Connection refused"), "provision")
    assert isinstance(down, TransientBackendError)
    leaked = backend._pg_error(psycopg2.ProgrammingError("syntax error near 'pg-admin-pw-99'"), "x")
    assert "pg-admin-pw-99" not in str(leaked) and "pg-admin-pw-99" not in repr(backend)


def test_validate_setting_checks_json_settings():
    assert DockerBackend.validate_setting("env_template", '{"A": "{url}"}') == {"A": "{url}"}
    with pytest.raises(ValidationError) as info:
        DockerBackend.validate_setting("env_template", {"A": "{nope}"})
    assert "nope" in info.value.errors["env_template"]
    with pytest.raises(ValidationError):
        DockerBackend.validate_setting("volume_mounts", {"data": "relative/path"})
    stored = DockerBackend.validate_setting("secret_env", {"API_KEY": "k-1"})
    assert json.loads(stored) == {"API_KEY": "k-1"}
    with pytest.raises(ValidationError) as info:
        DockerBackend.validate_setting("secret_env", "not json at all {")
    assert "k-1" not in str(info.value)
    assert DockerBackend.validate_setting("image", "x:1") == "x:1"
    # a secret JSON value stored through str() (a Python literal) is still read back
    backend = DockerBackend({**_offline_backend().settings, "secret_env": Secret(str({"K": "v-123"}))})
    assert backend._secret_env() == {"K": "v-123"}


def test_claim_key_is_the_space():
    backend = _offline_backend()
    # a draft spec, as the core builds it before checkout
    spec = ServiceSpec(service_id=0, external_id="", plan="community", options=OPTS,
                       params={"space": " Acme "}, customer_id=1, customer_email="a@example.test")
    assert backend.claim_key(spec) == ("space", "acme")
    for bad in ("www", "-x", ""):
        with pytest.raises(PermanentBackendError) as info:
            backend.claim_key(dataclasses.replace(spec, params={"space": bad}))
        assert set(info.value.fields) == {"space"}

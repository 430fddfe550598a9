"""Fixtures for the Docker backend's tests: a real Docker Engine, a real PostgreSQL and Redis.

* ``docker_client``: the engine from DOCKER_HOST or the local socket; every test that needs it
  skips, with the reason, when none answers, and fails under CI=true (``scripts/test`` starts
  ``dockerd --iptables=false``). Only "cannot reach the engine" skips: any other error is an error.
* ``standin_image``: built once per session from busybox-static's ``/bin/busybox`` with
  ``docker import``: ``busybox httpd`` serves "App is running!" at ``/api/`` on ``$PORT`` (the
  backend passes ``PORT={container_port}`` through ``env_template``), and a CGI stand-in of
  Postiz's first-account registration at ``/cgi-bin/register`` (the body lands in
  ``/tmp/registered.json``; a second registration answers 400).
* ``make_backend``: a ``DockerBackend`` factory against those; everything the session makes is
  named ``hpt<run id>...`` and removed after each test and at the end, also when a test fails.
"""
from __future__ import annotations

import docker
import psycopg2
import pytest
from docker_backend_testkit import (PREFIX, RUN_ID, build_standin_image, cleanup_docker, cleanup_postgres,
                                    static_busybox)

from panel.testing import missing_component
from panel_docker import DockerBackend


@pytest.fixture(scope="session")
def docker_client():
    """A Docker SDK client for the local engine; a skip (CI: a failure) with the reason when no
    engine answers."""
    import requests

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        missing_component(f"no Docker Engine reachable ({reason}); start one: `dockerd --iptables=false &`")
    yield client
    _cleanup_everything(client)
    client.close()


def _cleanup_docker(client) -> None:
    cleanup_docker(client, PREFIX)


def _cleanup_postgres(admin_url: str) -> None:
    cleanup_postgres(admin_url, PREFIX)


def _cleanup_everything(client) -> None:
    """Remove every container, volume, network and image tag this session made (each step on its own)."""
    steps = [lambda: _cleanup_docker(client)]
    steps += [network.remove for network in client.networks.list(names=[f"{PREFIX}-net"])]
    steps += [lambda image=image: client.images.remove(image.id, force=True)
              for image in client.images.list(name=f"{PREFIX}/standin")]
    failures = []
    for step in steps:
        try:
            step()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            failures.append(str(exc))
    if failures:
        raise RuntimeError("cleanup of the Docker test objects failed: " + "; ".join(failures))


@pytest.fixture(scope="session")
def standin_image(docker_client):
    """Tag of the stand-in app image (busybox httpd answering "App is running!" at /api/)."""
    busybox = static_busybox()
    if busybox is None:
        missing_component("no static busybox found (apt-get install busybox-static)")
    yield build_standin_image(docker_client, busybox, f"{PREFIX}/standin")
    # the session finaliser of docker_client removes the image (after every container is gone)


@pytest.fixture(scope="session")
def test_network(docker_client):
    """A user-defined bridge network for the session's containers (like the one Traefik watches)."""
    network = docker_client.networks.create(f"{PREFIX}-net", driver="bridge",
                                            labels={"panel.test": PREFIX})
    yield network.name


@pytest.fixture
def base_settings(standin_image, postgres_server, redis_server, test_network):
    """Settings of a working backend on this machine (loopback only)."""
    return {
        "image": standin_image,
        "base_domain": "communities.test",
        "network": test_network,
        "publish_host": "127.0.0.1",
        "postgres_url": postgres_server.admin_url,
        "database_host": "db.internal:5432",
        "redis_url": redis_server.url,
        "name_prefix": PREFIX,
        "health_timeout_seconds": 20,
        "env_template": {"PORT": "{container_port}", "COMMUNITY": "{space}"},
        "usage_cache_seconds": 30,
    }


@pytest.fixture
def make_backend(base_settings, docker_client, postgres_server):
    """``make_backend(**overrides)`` -> DockerBackend; cleans up after the test, pass or fail."""
    made = []

    def factory(**overrides):
        backend = DockerBackend({**base_settings, **overrides})
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.close()
    _cleanup_docker(docker_client)
    _cleanup_postgres(postgres_server.admin_url)


@pytest.fixture
def backend(make_backend):
    """A working backend (retention 0)."""
    return make_backend()


@pytest.fixture
def pg(postgres_server):
    """An autocommit superuser connection to the test PostgreSQL."""
    conn = psycopg2.connect(postgres_server.admin_url)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def norights_url(postgres_server):
    """Admin URL of a login role without CREATEDB/CREATEROLE (the server trusts any password)."""
    conn = psycopg2.connect(postgres_server.admin_url)
    conn.autocommit = True
    role = f"norights_{RUN_ID}"  # not PREFIX-named: the per-test cleanup must not drop it
    with conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD %s', ("wrong-pass-" + RUN_ID,))
    url = postgres_server.admin_url.replace("panel_admin@", f"{role}:wrong-pass-{RUN_ID}@")
    yield url
    with conn.cursor() as cur:
        cur.execute(f'DROP ROLE IF EXISTS "{role}"')
    conn.close()

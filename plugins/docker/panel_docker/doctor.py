"""``panel doctor`` checks of the Docker backend (the core's ``doctor_checks`` hook): the engine
answers, the image is there (the backend never pulls), the network exists, and the shared
PostgreSQL takes the admin's login with CREATEDB and CREATEROLE. Together they cover
``test_connection``, so the core does not run it as well.

Remote calls: Docker Engine API ``GET /version``, ``GET /images/{name}/json``,
``GET /networks/{id}``; PostgreSQL ``pg_roles`` of ``current_user``.
"""
from __future__ import annotations

import docker
import docker.errors

from panel.backends import BackendError
from panel.doctor import Check, Problem


def check_engine(backend, specs) -> list[Problem]:
    """The Docker Engine answers, the image is present, the network exists."""
    try:
        client = backend._client()
        with backend._docker_errors("doctor"):
            client.version()
    except BackendError as exc:
        return [Problem(f"the Docker Engine cannot be reached: {exc}",
                        "start dockerd (or correct the docker_url setting / DOCKER_HOST), then panel plugins test docker")]
    problems = []
    image = backend._s("image")
    with backend._docker_errors("doctor"):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            problems.append(Problem(f"the image {image} is not on the engine (the backend never pulls)",
                                    f"docker pull {image} (or docker load it) on the engine"))
        network = backend._s("network")
        if network:
            try:
                client.networks.get(network)
            except docker.errors.NotFound:
                problems.append(Problem(f"the Docker network {network} does not exist",
                                        f"docker network create {network} (the network Traefik watches), or correct "
                                        "the network setting"))
    return problems


def check_postgres(backend, specs) -> list[Problem]:
    """The shared PostgreSQL accepts the admin URL and the role may create databases and roles."""
    try:
        with backend._pg(what="doctor") as conn, conn.cursor() as cur:
            backend._admin_rights(cur)
    except BackendError as exc:
        return [Problem(f"the shared PostgreSQL: {exc}",
                        "correct the postgres_url setting (an admin with CREATEDB and CREATEROLE) and check that "
                        "PostgreSQL runs")]
    return []


def checks() -> list[Check]:
    """The checks this plugin adds to ``panel doctor``."""
    return [Check("docker engine", check_engine, backend="docker", covers_connection=True),
            Check("docker postgresql", check_postgres, backend="docker", covers_connection=True)]

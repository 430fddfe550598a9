"""The Docker backend's ``panel doctor`` checks on a real Docker Engine and PostgreSQL: an engine
that does not answer, a missing image, a missing network, a PostgreSQL admin without rights."""
from __future__ import annotations

from panel.testing import free_port
from panel_docker import doctor


def test_a_sound_setup_has_no_problems(backend):
    assert doctor.check_engine(backend, []) == []
    assert doctor.check_postgres(backend, []) == []


def test_an_engine_that_does_not_answer(make_backend):
    backend = make_backend(docker_url=f"tcp://127.0.0.1:{free_port()}", api_timeout_seconds=3)
    [problem] = doctor.check_engine(backend, [])
    assert problem.message.startswith("the Docker Engine cannot be reached:")
    assert "start dockerd" in problem.fix and "docker_url" in problem.fix


def test_a_missing_image_and_network(make_backend):
    from docker_backend_testkit import PREFIX

    backend = make_backend(image=f"{PREFIX}/not-here:1", network=f"{PREFIX}-no-such-net")
    problems = {p.message: p.fix for p in doctor.check_engine(backend, [])}
    image = f"the image {PREFIX}/not-here:1 is not on the engine (the backend never pulls)"
    assert problems[image] == f"docker pull {PREFIX}/not-here:1 (or docker load it) on the engine"
    network = f"the Docker network {PREFIX}-no-such-net does not exist"
    assert problems[network].startswith(f"docker network create {PREFIX}-no-such-net")


def test_a_postgres_admin_without_rights(make_backend, norights_url):
    backend = make_backend(postgres_url=norights_url)
    [problem] = doctor.check_postgres(backend, [])
    assert "lacks CREATEDB and CREATEROLE" in problem.message
    assert "wrong-pass" not in problem.message, "never the password"
    assert "postgres_url" in problem.fix

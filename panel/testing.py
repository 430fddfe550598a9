"""``panel.testing``: a pytest plugin with the backend contract suite every backend must pass.

Loaded automatically through the ``pytest11`` entry point when hostpanel is installed (or with
``pytest_plugins = ["panel.testing"]``). A backend's own tests subclass ``BackendContract`` and
provide four fixtures, usually against a loopback stand-in of the remote API::

    class TestMyBackendContract(BackendContract):
        @pytest.fixture
        def backend(self, my_standin):        # a configured Backend instance
            return MyBackend({...})

        @pytest.fixture
        def unreachable_backend(self):        # same backend class, pointed where nothing listens
            return MyBackend({"api_url": f"http://127.0.0.1:{free_port()}", ...})

        @pytest.fixture
        def rejecting_backend(self, my_standin):   # same class with credentials the remote refuses
            return MyBackend({... "api_token": "wrong"})

        @pytest.fixture
        def remote(self, my_standin):         # a view of the remote side, see RemoteView
            return MyRemoteView(my_standin)

The suite checks: idempotent provision (a retry after a lost result adopts, never duplicates),
idempotent suspend/unsuspend/terminate, typed errors, usage with units, and that no secret
appears in any ``repr``, log record, details mapping or exception message.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import socket
from typing import Protocol

import pytest

from panel.backends import (Backend, BackendError, PermanentBackendError, Provisioned, Secret,
                            ServiceSpec, TransientBackendError, Usage)

_counter = itertools.count(1)


class RemoteView(Protocol):
    """What the contract suite needs to see of the remote side."""

    def count(self, spec: ServiceSpec) -> int:
        """How many remote objects exist for ``spec.external_id`` (0 after terminate)."""

    def state(self, spec: ServiceSpec) -> str:
        """``"active"``, ``"suspended"`` or ``"absent"`` for ``spec.external_id``."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_spec(backend: Backend, *, options: dict | None = None, params: dict | None = None,
              email: str | None = None, **extra) -> ServiceSpec:
    """Build a fresh ``ServiceSpec`` with a unique external id, using the backend's schema defaults."""
    n = next(_counter)
    opts = backend.validate_plan_options(options or {})
    prm = backend.validate_order_params(params or {}, opts)
    return ServiceSpec(service_id=90000 + n, external_id=f"hp-contract-{n}-{socket.gethostname()[:8]}".lower(),
                       plan="contract", options=opts, params=prm, customer_id=7,
                       customer_email=email or f"contract{n}@example.test", **extra)


def after_provision(spec: ServiceSpec, result: Provisioned) -> ServiceSpec:
    """The spec the core builds once ``result`` is recorded (what later calls receive)."""
    secrets = {k: v if isinstance(v, Secret) else Secret(v) for k, v in result.secrets.items()}
    return dataclasses.replace(spec, resource_id=result.resource_id, backend_data=dict(result.data),
                               secrets=secrets)


def secret_values(backend: Backend, *results: Provisioned) -> list[str]:
    """Every secret string in the backend's settings and the given results (non-empty ones)."""
    values = [v.reveal() for v in backend.settings.values() if isinstance(v, Secret)]
    for result in results:
        values += [v.reveal() if isinstance(v, Secret) else str(v) for v in result.secrets.values()]
    return [v for v in values if v and len(v) >= 4]


class BackendContract:
    """Subclass in a backend's tests and provide the fixtures named in the module docstring.

    ``spec_options`` / ``spec_params`` (class attributes) are the plan options and order params
    used for the specs the suite builds.
    """

    spec_options: dict = {}
    spec_params: dict = {}

    def new_spec(self, backend: Backend) -> ServiceSpec:
        """A fresh spec with this suite's plan options and order params."""
        return make_spec(backend, options=dict(self.spec_options), params=dict(self.spec_params))

    def test_backend_declares_itself(self, backend):
        """The backend has a lower-case name and marks secret-looking settings secret."""
        assert isinstance(backend, Backend)
        assert backend.name and backend.name == backend.name.lower()
        for f in backend.settings_schema:
            if any(word in f.name for word in ("token", "password", "api_key", "secret")):
                assert f.secret, f"setting {f.name!r} looks secret but is not marked secret=True"

    def test_provision_is_idempotent(self, backend, remote):
        """A retried provision (with or without the recorded result) adopts: one remote object."""
        spec = self.new_spec(backend)
        first = backend.provision(spec)
        assert isinstance(first, Provisioned)
        assert remote.count(spec) == 1
        # The worker died before the result was recorded: the retry sees the bare spec again.
        again = backend.provision(spec)
        assert remote.count(spec) == 1, "a retried provision made a second remote object"
        assert again.resource_id == first.resource_id
        # And a retry after the result was recorded adopts it too.
        recorded = after_provision(spec, first)
        third = backend.provision(recorded)
        assert remote.count(spec) == 1
        assert third.resource_id == first.resource_id
        assert remote.state(spec) == "active"

    def test_suspend_and_unsuspend_are_idempotent(self, backend, remote):
        """Suspending or unsuspending twice succeeds and leaves the right state."""
        spec = self.new_spec(backend)
        spec = after_provision(spec, backend.provision(spec))
        backend.suspend(spec)
        backend.suspend(spec)
        assert remote.state(spec) == "suspended"
        backend.unsuspend(spec)
        backend.unsuspend(spec)
        assert remote.state(spec) == "active"

    def test_terminate_is_idempotent(self, backend, remote):
        """Terminating what is gone succeeds."""
        spec = self.new_spec(backend)
        spec = after_provision(spec, backend.provision(spec))
        backend.terminate(spec)
        assert remote.count(spec) == 0
        assert remote.state(spec) == "absent"
        backend.terminate(spec)  # already gone: still a success
        assert remote.count(spec) == 0

    def test_unreachable_remote_is_transient(self, unreachable_backend):
        """A remote where nothing listens is a TransientBackendError (retried)."""
        spec = self.new_spec(unreachable_backend)
        with pytest.raises(TransientBackendError) as info:
            unreachable_backend.provision(spec)
        assert str(info.value), "error message must say what went wrong"

    def test_rejected_credentials_are_permanent(self, rejecting_backend):
        """Credentials the remote refuses are a PermanentBackendError."""
        spec = self.new_spec(rejecting_backend)
        with pytest.raises(PermanentBackendError) as info:
            rejecting_backend.provision(spec)
        assert str(info.value)

    def test_errors_are_typed(self, backend, unreachable_backend, rejecting_backend):
        """No operation lets an untyped exception escape."""
        for candidate in (unreachable_backend, rejecting_backend):
            spec = self.new_spec(candidate)
            for call in (lambda: candidate.provision(spec), lambda: candidate.suspend(spec),
                         lambda: candidate.terminate(spec)):
                try:
                    call()
                except BackendError:
                    pass
                except Exception as exc:  # pragma: no cover - the failure message is the point
                    pytest.fail(f"{type(candidate).__name__} raised untyped {type(exc).__name__}: {exc}")

    def test_usage_has_units(self, backend):
        """Every usage metric has a unit and a number."""
        spec = self.new_spec(backend)
        spec = after_provision(spec, backend.provision(spec))
        usage = backend.usage(spec)
        assert isinstance(usage, Usage)
        for metric in usage.metrics:
            assert metric.unit, f"metric {metric.name!r} has no unit"
            assert isinstance(metric.value, (int, float))
        json.dumps(usage.to_json())

    def test_secrets_never_in_repr_logs_details_or_errors(self, backend, rejecting_backend, caplog):
        """No secret reaches a repr, a log record, the details or an error message."""
        caplog.set_level(logging.DEBUG)
        spec = self.new_spec(backend)
        result = backend.provision(spec)
        recorded = after_provision(spec, result)
        details = backend.details(recorded)
        json.dumps(details)
        usage = backend.usage(recorded)
        errors = []
        for candidate in (rejecting_backend,):
            try:
                candidate.provision(self.new_spec(candidate))
            except BackendError as exc:
                errors.append(str(exc) + repr(exc))
        haystack = "\n".join([repr(backend), repr(rejecting_backend), repr(spec), repr(recorded),
                              repr(result), json.dumps(details, default=str), repr(usage),
                              json.dumps(dict(result.data), default=str), caplog.text, *errors])
        for value in secret_values(backend, result) + secret_values(rejecting_backend):
            assert value not in haystack, "a secret value leaked into repr, logs, details or errors"


# --------------------------------------------------------------------------- real servers
# Session fixtures that start real Redis and PostgreSQL servers on loopback for any test that
# asks (core and plugin tests alike). When the binaries are absent they skip with the reason, and
# under CI=true they fail instead (``missing_component``): .ci/run installs them, so a missing one
# there is a broken CI machine, never a green run.

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def in_ci() -> bool:
    """Whether the tests run in CI (``CI`` is ``true``/``1``/``yes``, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_component(reason: str) -> None:
    """A component a test needs is not there (a binary, a Docker Engine): skip with ``reason``, or,
    under ``CI=true``, fail with it. Never returns."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing component is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def wait_for(predicate, timeout: float = 3.0, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` every ``interval`` seconds until it is true (returns ``True``) or
    ``timeout`` seconds pass (returns ``False``): for answers from stand-ins that arrive late."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a server process, then SIGKILL it if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found and "/usr/lib/postgresql" in os.path.realpath(found):
        return found
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for version in sorted(root.iterdir(), reverse=True):
            candidate = version / "bin" / name
            if candidate.exists():
                return str(candidate)
    return found


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1 with no persistence; ``url`` is ``redis://...``."""

    def __init__(self):
        binary = shutil.which("redis-server")
        if not binary:
            missing_component("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="panel-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, proc=self.proc)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self):
        """Stop the server and remove its files."""
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb + postgres) on 127.0.0.1, trust auth.

    ``admin_url`` connects as the superuser ``panel_admin``; ``create_database()`` makes a fresh
    database and returns its URL. Runs as the ``postgres`` system user when started by root.
    """

    def __init__(self):
        initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
        if not (initdb and postgres):
            missing_component("PostgreSQL server binaries are not installed (apt-get install postgresql)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="panel-pg-")
        prefix: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                missing_component("running as root and there is no 'postgres' user to run PostgreSQL as")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            os.chmod(self.dir, 0o700)
            prefix = ["runuser", "-u", "postgres", "--"]
        data = os.path.join(self.dir, "data")
        subprocess.run(prefix + [initdb, "-D", data, "-U", "panel_admin", "--auth=trust", "-E", "UTF8",
                                 "--no-sync"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.proc = subprocess.Popen(
            prefix + [postgres, "-D", data, "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                      "-c", f"unix_socket_directories={self.dir}", "-c", "fsync=off",
                      "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                      "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, proc=self.proc)
        self.admin_url = f"postgresql://panel_admin@127.0.0.1:{self.port}/postgres"
        self._wait_ready()

    def _wait_ready(self):
        import psycopg2

        deadline = time.monotonic() + 20
        while True:
            try:
                psycopg2.connect(self.admin_url).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str | None = None) -> str:
        """Create a new empty database; returns ``postgresql://panel_admin@127.0.0.1:PORT/NAME``."""
        import psycopg2

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(self.admin_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return f"postgresql://panel_admin@127.0.0.1:{self.port}/{name}"

    def stop(self):
        """Stop the server and remove its files."""
        stop_process(self.proc, 15)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    """A real Redis server for the whole test session (``.url``)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL cluster for the whole test session (``.admin_url``, ``.create_database()``)."""
    server = PostgresServer()
    yield server
    server.stop()

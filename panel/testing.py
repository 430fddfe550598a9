"""``panel.testing``: a pytest plugin with the backend contract suite every backend must pass.

Loaded automatically through the ``pytest11`` entry point when hostpanel is installed (or with
``pytest_plugins = ["panel.testing"]``). A backend's own tests subclass ``BackendContract`` and
provide four fixtures, usually against a loopback stand-in of the remote API::

    class TestMyBackendContract(BackendContract):
        spec_params = {"name": "contract"}          # order params of the specs the suite builds
        changed_options = {"memory_mib": 1024}     # plan options for change_plan (if supported)

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

What the suite checks, method by method:

* the schemas: ``Settings``, ``PlanOptions`` and ``OrderParams`` are ``panel.Schema`` models whose
  JSON Schema generates; secret-looking settings are ``SecretStr``; unknown order params are a
  field-level ``ValidationError``;
* ``provision``: idempotent after a lost answer (a retry with the bare spec, and one with the
  recorded result, adopt the one remote object) and the remote object is active; a provision that
  raises ``InProgress`` is asked again until it finishes (``provision_until_done``), as the core does;
* ``suspend``/``unsuspend``: twice each succeeds and leaves the right remote state;
* ``terminate``: twice succeeds, also from ``suspended`` and for a service never provisioned;
* typed errors: with nothing listening, every operation raises ``TransientBackendError`` (``usage``
  may instead answer from what it knows without the remote);
  credentials the remote refuses make ``provision`` raise ``PermanentBackendError``; no
  operation of either lets an untyped exception escape;
* ``usage``: where the backend reports usage (overrides ``usage``), at least one metric, each
  with a unit and a finite number;
* billable metrics: ``billable_metrics`` maps each name to a ``BillableMetric`` of that name (unit,
  aggregate in ``AGGREGATES``), and each appears in ``usage()`` of a provisioned service under its
  name with the declared unit (a plan's ``metered:`` prices are computed from those figures);
* secrets: the backend's secret settings and ``Provisioned.secrets`` appear in no ``repr``, log
  record, details mapping or error message (and the suite fails if there is no secret to look for);
* ``change_plan``, ``list_resources`` and ``test_connection`` where supported
  (``Backend.supports``), and ``NotSupportedError`` where not;
* the client area: typed sections without secret values, every named credential revealable;
  actions declared with unique names, live statuses and no secret parameters, an unknown action
  refused with a ``PermanentBackendError``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import socket
from typing import Protocol

import pytest
from pydantic import BaseModel, SecretStr

from panel.backends import (AGGREGATES, Backend, BackendError, BillableMetric, InProgress, NotSupportedError,
                            PermanentBackendError, Provisioned,
                            Resource, Schema, Secret, ServiceSpec, TransientBackendError, Usage,
                            ValidationError, json_schema, schema_fields)

_counter = itertools.count(1)

#: Words that make a setting's name look secret: such a setting must be a ``SecretStr``.
SECRET_WORDS = ("token", "password", "api_key", "secret", "private_key")


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


def provision_until_done(backend: Backend, spec: ServiceSpec, *, polls: int = 50) -> Provisioned:
    """``backend.provision(spec)``, asked again while it raises ``InProgress`` (the remote is still
    making it, e.g. a Pterodactyl install), as the core's jobs do, without waiting between asks
    (stand-ins finish by being asked). Fails the test when it is still in progress after ``polls``
    asks; other errors propagate."""
    for _ in range(polls):
        try:
            return backend.provision(spec)
        except InProgress:
            continue
    pytest.fail(f"provision of {spec.external_id} was still in progress after {polls} asks")


def after_provision(spec: ServiceSpec, result: Provisioned) -> ServiceSpec:
    """The spec the core builds once ``result`` is recorded (what later calls receive)."""
    secrets = {k: v if isinstance(v, Secret) else Secret(v) for k, v in result.secrets.items()}
    return dataclasses.replace(spec, resource_id=result.resource_id, backend_data=dict(result.data),
                               secrets=secrets)


def secret_values(backend: Backend, *results: Provisioned) -> list[str]:
    """Every secret string in the backend's settings and the given results (non-empty ones)."""
    values = [v.get_secret_value() for v in backend.settings.values() if isinstance(v, SecretStr)]
    for result in results:
        values += [v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in result.secrets.values()]
    return [v for v in values if v and len(v) >= 4]


def operations(backend: Backend, spec: ServiceSpec, fresh: ServiceSpec,
               changed_options: dict | None = None) -> dict:
    """``{method name: zero-argument call}`` of every operation ``backend`` implements: provision
    of the never-provisioned ``fresh``, the others on the recorded ``spec`` (the lifecycle ones,
    plus ``usage``, ``change_plan``, ``list_resources`` and ``test_connection`` where supported)."""
    calls = {"provision": lambda: backend.provision(fresh), "suspend": lambda: backend.suspend(spec),
             "unsuspend": lambda: backend.unsuspend(spec), "terminate": lambda: backend.terminate(spec)}
    if backend.supports("usage"):
        calls["usage"] = lambda: backend.usage(spec)
    if backend.supports("change_plan") and changed_options is not None:
        calls["change_plan"] = lambda: backend.change_plan(spec, changed_options)
    if backend.supports("list_resources"):
        calls["list_resources"] = backend.list_resources
    if backend.supports("test_connection"):
        calls["test_connection"] = backend.test_connection
    return calls


class BackendContract:
    """Subclass in a backend's tests and provide the fixtures named in the module docstring.

    Class attributes: ``spec_options`` / ``spec_params`` are the plan options and order params of
    the specs the suite builds (override ``new_spec`` when each spec needs its own params);
    ``changed_options`` the plan options ``change_plan`` moves a service to (required when the
    backend supports ``change_plan``).
    """

    spec_options: dict = {}
    spec_params: dict = {}
    changed_options: dict | None = None

    def new_spec(self, backend: Backend) -> ServiceSpec:
        """A fresh spec with this suite's plan options and order params."""
        return make_spec(backend, options=dict(self.spec_options), params=dict(self.spec_params))

    def provisioned(self, backend: Backend) -> ServiceSpec:
        """A fresh spec, provisioned on ``backend`` and recorded (what the core passes later)."""
        spec = self.new_spec(backend)
        return after_provision(spec, provision_until_done(backend, spec))

    # ------------------------------------------------------------------ declarations and schemas

    def test_backend_declares_itself(self, backend):
        """A lower-case name, pydantic schemas whose JSON Schema generates, secret-looking
        settings declared ``SecretStr``."""
        assert isinstance(backend, Backend)
        assert backend.name and backend.name == backend.name.lower()
        for model in (backend.Settings, backend.PlanOptions, backend.OrderParams):
            assert isinstance(model, type) and issubclass(model, BaseModel), f"{model!r} is not a pydantic model"
            assert issubclass(model, Schema), f"{model.__name__} should subclass panel.Schema"
            doc = json_schema(model)
            assert doc["type"] == "object"
            json.dumps(doc)
        fields = schema_fields(backend.Settings)
        for f in fields:
            if any(word in f.name for word in SECRET_WORDS):
                assert f.secret, f"setting {f.name!r} looks secret but is not a SecretStr"
        for name, value in backend.settings.items():
            if name in {f.name for f in fields if f.secret} and value is not None:
                assert isinstance(value, Secret), f"secret setting {name!r} did not arrive as a Secret"

    def test_unknown_order_params_are_field_errors(self, backend):
        """An order param the schema does not know is refused by name (never a 500)."""
        options = backend.validate_plan_options(dict(self.spec_options))
        with pytest.raises(ValidationError) as info:
            backend.validate_order_params({**self.spec_params, "no_such_param_xyz": "1"}, options)
        assert "no_such_param_xyz" in info.value.errors

    # ------------------------------------------------------------------ lifecycle

    def test_provision_is_idempotent(self, backend, remote):
        """A retried provision (with or without the recorded result) adopts: one remote object."""
        spec = self.new_spec(backend)
        first = provision_until_done(backend, spec)
        assert isinstance(first, Provisioned)
        assert remote.count(spec) == 1
        # The worker died before the result was recorded: the retry sees the bare spec again.
        again = provision_until_done(backend, spec)
        assert remote.count(spec) == 1, "a retried provision made a second remote object"
        assert again.resource_id == first.resource_id
        # And a retry after the result was recorded adopts it too.
        recorded = after_provision(spec, first)
        third = provision_until_done(backend, recorded)
        assert remote.count(spec) == 1
        assert third.resource_id == first.resource_id
        assert remote.state(spec) == "active"

    def test_suspend_and_unsuspend_are_idempotent(self, backend, remote):
        """Suspending or unsuspending twice succeeds and leaves the right state."""
        spec = self.provisioned(backend)
        backend.suspend(spec)
        backend.suspend(spec)
        assert remote.state(spec) == "suspended"
        backend.unsuspend(spec)
        backend.unsuspend(spec)
        assert remote.state(spec) == "active"
        assert remote.count(spec) == 1

    def test_terminate_is_idempotent(self, backend, remote):
        """Terminating what is gone succeeds."""
        spec = self.provisioned(backend)
        backend.terminate(spec)
        assert remote.count(spec) == 0
        assert remote.state(spec) == "absent"
        backend.terminate(spec)  # already gone: still a success
        assert remote.count(spec) == 0

    def test_terminate_a_suspended_service(self, backend, remote):
        """A suspended service can be terminated (``suspended`` -> ``terminating``)."""
        spec = self.provisioned(backend)
        backend.suspend(spec)
        assert remote.state(spec) == "suspended"
        backend.terminate(spec)
        assert remote.count(spec) == 0

    def test_terminate_what_was_never_made(self, backend, remote):
        """Terminating a service whose provision never ran (an order cancelled before it, or a
        provision that failed before reaching the remote) succeeds and touches nothing."""
        spec = self.new_spec(backend)
        backend.terminate(spec)
        assert remote.count(spec) == 0

    # ------------------------------------------------------------------ typed errors

    def test_unreachable_remote_is_transient(self, unreachable_backend):
        """A remote where nothing listens is a TransientBackendError (retried)."""
        spec = self.new_spec(unreachable_backend)
        with pytest.raises(TransientBackendError) as info:
            unreachable_backend.provision(spec)
        assert str(info.value), "error message must say what went wrong"
        assert not isinstance(info.value, InProgress), "an unreachable remote is not work in progress"

    def test_rejected_credentials_are_permanent(self, rejecting_backend):
        """Credentials the remote refuses are a PermanentBackendError."""
        spec = self.new_spec(rejecting_backend)
        with pytest.raises(PermanentBackendError) as info:
            rejecting_backend.provision(spec)
        assert not isinstance(info.value, NotSupportedError), f"refused credentials, not {info.value}"
        assert str(info.value)

    def test_errors_are_typed(self, backend, unreachable_backend, rejecting_backend):
        """With nothing listening every operation raises TransientBackendError (for a service that
        exists; ``usage`` may answer without the remote); with refused credentials every operation raises a typed error or succeeds. No
        untyped exception escapes either."""
        recorded = self.provisioned(backend)
        fresh = self.new_spec(backend)
        for name, call in operations(unreachable_backend, recorded, fresh, self.changed_options).items():
            try:
                result = call()
            except TransientBackendError as exc:
                assert str(exc), f"unreachable {name}: the error has no message"
            except Exception as exc:  # the failure message is the point
                pytest.fail(f"unreachable {name} raised {type(exc).__name__} instead of "
                            f"TransientBackendError: {exc}")
            else:
                # usage may be answered without the remote (plan limits, a cache): never as a success
                # of anything that needs the remote
                if not (name == "usage" and isinstance(result, Usage)):
                    pytest.fail(f"unreachable {name} succeeded although nothing listens")
        for name, call in operations(rejecting_backend, recorded, fresh, self.changed_options).items():
            try:
                call()
            except BackendError:
                pass
            except Exception as exc:
                pytest.fail(f"{name} with refused credentials raised untyped {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ usage and secrets

    def test_usage_has_units(self, backend):
        """Where the backend reports usage: at least one metric, each with a unit and a number."""
        spec = self.provisioned(backend)
        usage = backend.usage(spec)
        assert isinstance(usage, Usage)
        if backend.supports("usage"):
            assert usage.metrics, f"{type(backend).__name__}.usage returned no metric"
        else:
            assert usage.metrics == ()
        for metric in usage.metrics:
            assert metric.unit, f"metric {metric.name!r} has no unit"
            assert isinstance(metric.value, (int, float)) and not isinstance(metric.value, bool), (
                f"metric {metric.name!r} is not a number: {metric.value!r}")
            assert math.isfinite(metric.value)
        json.dumps(usage.to_json())

    def test_billable_metrics_are_reported_with_their_units(self, backend):
        """Each metric of ``billable_metrics`` is a ``BillableMetric`` under its own name with an
        aggregate of ``AGGREGATES``, and ``usage()`` of a provisioned service reports it under that
        name with the declared unit (a backend that declares none passes)."""
        declared = type(backend).billable_metrics
        for name, metric in declared.items():
            assert isinstance(metric, BillableMetric), f"billable_metrics[{name!r}] is not a BillableMetric"
            assert metric.name == name, f"billable_metrics[{name!r}] is named {metric.name!r}"
            assert metric.unit and metric.aggregate in AGGREGATES
        if not declared:
            return
        assert backend.supports("usage"), f"{type(backend).__name__} declares billable metrics but no usage()"
        spec = self.provisioned(backend)
        reported = {m.name: m for m in backend.usage(spec).metrics}
        for name, metric in declared.items():
            assert name in reported, (f"billable metric {name!r} is missing from usage() "
                                      f"(reported: {', '.join(sorted(reported)) or 'none'})")
            assert reported[name].unit == metric.unit, (
                f"billable metric {name!r} is declared in {metric.unit!r} but usage() reports {reported[name].unit!r}")

    def test_secrets_never_in_repr_logs_details_or_errors(self, backend, unreachable_backend,
                                                          rejecting_backend, caplog):
        """No secret reaches a repr, a log record, the details or an error message."""
        caplog.set_level(logging.DEBUG)
        spec = self.new_spec(backend)
        result = provision_until_done(backend, spec)
        recorded = after_provision(spec, result)
        details = backend.details(recorded)
        json.dumps(details)
        usage = backend.usage(recorded)
        errors = []
        with pytest.raises(PermanentBackendError) as refused:
            rejecting_backend.provision(self.new_spec(rejecting_backend))
        assert not isinstance(refused.value, NotSupportedError), refused.value
        errors.append(str(refused.value) + repr(refused.value))
        with pytest.raises(TransientBackendError) as down:
            unreachable_backend.provision(self.new_spec(unreachable_backend))
        errors.append(str(down.value) + repr(down.value))
        haystack = "\n".join([repr(backend), repr(rejecting_backend), repr(unreachable_backend), repr(spec),
                              repr(recorded), repr(result), json.dumps(details, default=str), repr(usage),
                              json.dumps(dict(result.data), default=str), caplog.text, *errors])
        values = secret_values(backend, result) + secret_values(rejecting_backend) + secret_values(
            unreachable_backend)
        assert values, ("nothing secret to look for: give the fixtures' backends a secret setting "
                        "(a SecretStr) or return Provisioned.secrets")
        for value in values:
            assert value not in haystack, "a secret value leaked into repr, logs, details or errors"

    # ------------------------------------------------------------------ optional methods

    def test_change_plan(self, backend, remote):
        """Where supported: moving a service to ``changed_options`` succeeds twice (idempotent),
        returns ``None`` or a ``Provisioned`` and keeps the one remote object; else
        ``NotSupportedError``."""
        spec = self.provisioned(backend)
        if not backend.supports("change_plan"):
            with pytest.raises(NotSupportedError):
                backend.change_plan(spec, dict(spec.options))
            return
        assert self.changed_options is not None, "set changed_options: the backend supports change_plan"
        new_options = backend.validate_plan_options(dict(self.changed_options))
        for _ in range(2):
            result = backend.change_plan(spec, new_options)
            assert result is None or isinstance(result, Provisioned)
            if result is not None:
                spec = after_provision(spec, result)
            spec = dataclasses.replace(spec, options=new_options)
        assert remote.count(spec) == 1
        assert remote.state(spec) == "active"

    def test_list_resources(self, backend, remote):
        """Where supported: every remote object of ours appears with its state (for ``panel
        reconcile``); a terminated one disappears. Else ``NotSupportedError``."""
        if not backend.supports("list_resources"):
            with pytest.raises(NotSupportedError):
                backend.list_resources()
            return
        spec = self.provisioned(backend)

        claim = backend.claim_key(spec)

        def ours(r: Resource) -> bool:
            """Carries our external id, or (a remote that cannot store it) our id and claimed name."""
            if r.external_id:
                return r.external_id == spec.external_id
            return r.resource_id == spec.resource_id and (claim is None or r.name == claim[1])

        def mine() -> list[Resource]:
            found = backend.list_resources()
            assert all(isinstance(r, Resource) for r in found)
            return [r for r in found if ours(r)]

        listed = mine()
        assert len(listed) == 1, f"list_resources shows {len(listed)} objects for {spec.external_id}"
        # right after provision the remote may still be finishing (an install): active or provisioning
        assert listed[0].state in ("active", "provisioning"), listed[0]
        assert listed[0].resource_id == spec.resource_id
        backend.suspend(spec)
        assert [r.state for r in mine()] == ["suspended"]
        backend.terminate(spec)
        assert mine() == []

    def test_test_connection(self, backend, unreachable_backend, rejecting_backend):
        """Where supported: a one-line summary without secrets; nothing listening is transient.
        Else ``NotSupportedError``."""
        if not backend.supports("test_connection"):
            with pytest.raises(NotSupportedError):
                backend.test_connection()
            return
        summary = backend.test_connection()
        assert isinstance(summary, str) and summary.strip()
        for value in secret_values(backend):
            assert value not in summary
        with pytest.raises(TransientBackendError):
            unreachable_backend.test_connection()
        try:
            rejecting_backend.test_connection()
        except BackendError as exc:
            for value in secret_values(rejecting_backend):
                assert value not in str(exc)

    # ------------------------------------------------------------------ the client area

    def test_client_area(self, backend):
        """Where supported: the sections of a live service are the panel's section types, in plain
        JSON (no secret value in them), and every ``Credential`` they name can be revealed (a
        non-empty ``Secret``); an unknown credential is a ``PermanentBackendError``. Without a
        ``client_area`` the backend offers no sections."""
        from panel.backends import SECTION_TYPES, Credentials

        spec = self.new_spec(backend)
        result = provision_until_done(backend, spec)
        recorded = after_provision(spec, result)
        if not backend.supports("client_area"):
            assert backend.client_area(recorded) == []
            return
        sections = backend.client_area(recorded)
        assert sections, "client_area returned no section for a live service"
        for section in sections:
            assert isinstance(section, SECTION_TYPES), f"{section!r} is not a client-area section type"
        text = json.dumps([dataclasses.asdict(section) for section in sections], default=str)
        for value in secret_values(backend, result):
            assert value not in text, "a secret value is shown in the client area (name it in Credentials)"
        names = [c.name for section in sections if isinstance(section, Credentials) for c in section.credentials]
        for name in names:
            value = backend.reveal_credential(recorded, name)
            assert isinstance(value, Secret) and value.reveal(), f"credential {name!r} has no value"
            assert value.reveal() not in repr(value)
        with pytest.raises(PermanentBackendError):
            backend.reveal_credential(recorded, "no_such_credential_xyz")

    def test_actions_are_declared_well(self, backend):
        """The ``Action``s of a live service have unique names, labels, statuses among the live
        ones and parameter schemas without secrets; a backend that declares actions runs them
        (``run_action`` or a handler), and an unknown action is a ``PermanentBackendError``."""
        from panel.backends import Action, Schema, schema_fields

        recorded = self.provisioned(backend)
        declared = backend.actions(recorded)
        assert isinstance(declared, list)
        assert len({a.name for a in declared}) == len(declared), "two actions share a name"
        for action in declared:
            assert isinstance(action, Action) and action.label
            assert set(action.statuses) <= {"active", "suspended"}, action
            if action.params is not None:
                assert issubclass(action.params, Schema)
                assert not any(f.secret for f in schema_fields(action.params)), \
                    f"action {action.name!r} takes a secret parameter (payloads are stored in clear)"
            if action.handler is None:
                assert backend.supports("run_action"), f"action {action.name!r} has no run_action to run it"
        with pytest.raises(PermanentBackendError):
            backend.run_action(recorded, "no_such_action_xyz", {})


# --------------------------------------------------------------------------- real servers
# Session fixtures that start real Redis and PostgreSQL servers on loopback for any test that
# asks (core and plugin tests alike). When the binaries are absent they skip with the reason, and
# under CI=true they fail instead (``missing_component``): .ci/run installs them, so a missing one
# there is a broken CI machine, never a green run.

import os
import pwd
import shutil
import signal
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


def plugin_app(db_path, plugin: str, settings: dict, *, users=(("alice@example.com", "customer"),),
               plans=(), password: str = "password123", **config):
    """A real panel app for a plugin's integration tests: SQLite at ``db_path``, only the entry
    point ``plugin`` loaded, its ``settings`` stored (as an operator would, validated) and the
    backend enabled, ``users`` as ``(email, role)`` with ``password``, and ``plans`` (keyword
    dicts of ``panel.models.Plan``). ``config`` overrides the app config (e.g. ``REDIS_URL``). The
    caller removes ``PANEL_*`` variables from the environment first (``monkeypatch.delenv``) and
    disposes of the app (``db.session.remove()``, ``db.engine.dispose()``) at the end."""
    from panel import create_app
    from panel.extensions import db
    from panel.models import Plan, User
    from panel.plugins import set_enabled, set_setting

    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{db_path}", "PLUGINS": [plugin],
                      "SECRET_KEY": f"{plugin}-plugin-test-secret-key", "USAGE_INTERVAL": 0,
                      "RATELIMIT_ENABLED": False, "WTF_CSRF_ENABLED": False, **config})
    with app.app_context():
        db.create_all()
        for key, value in settings.items():
            set_setting(plugin, key, value)
        set_enabled(plugin, True)
        for email, role in users:
            user = User(email=email, role=role)
            user.set_password(password)
            db.session.add(user)
        db.session.add_all([Plan(**plan) for plan in plans])
        db.session.commit()
    return app


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
        self._cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", self.dir]
        self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, proc=self.proc)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def restart(self, down_seconds: float = 0.0):
        """Stop the server, wait ``down_seconds``, start it again on the same port: empty, since it
        keeps nothing on disk (a Redis restart without persistence)."""
        stop_process(self.proc)
        time.sleep(down_seconds)
        self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, proc=self.proc)

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
        self._data = data
        self._cmd = prefix + [postgres, "-D", data, "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                              "-c", f"unix_socket_directories={self.dir}", "-c", "fsync=off",
                              "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                              "-c", "max_connections=200"]
        self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, proc=self.proc)
        self.admin_url = f"postgresql://panel_admin@127.0.0.1:{self.port}/postgres"
        self._wait_ready()

    def restart(self, down_seconds: float = 0.0):
        """Restart the server the way ``pg_ctl restart -m fast`` does: SIGINT (open transactions
        are rolled back and every client is disconnected), wait ``down_seconds``, start again on
        the same port with the same data."""
        self._fast_shutdown(30)
        time.sleep(down_seconds)
        self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, proc=self.proc)
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
        """Stop the server the way ``pg_ctl stop -m fast`` does (SIGINT to the postmaster: no
        wait for clients, 15 ms instead of the 2 s of SIGTERM's smart shutdown; the data is thrown
        away anyway) and remove its files. SIGKILL after 15 s."""
        self._fast_shutdown(15)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _fast_shutdown(self, timeout: float) -> None:
        """SIGINT to the postmaster (``pg_ctl -m fast``: open transactions roll back, clients are
        cut off); SIGKILL if it has not exited after ``timeout`` seconds."""
        try:  # the postmaster itself (``runuser`` does not pass SIGINT on)
            with open(os.path.join(self._data, "postmaster.pid"), encoding="utf-8") as fh:
                os.kill(int(fh.readline().strip()), signal.SIGINT)
        except (OSError, ValueError):
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


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

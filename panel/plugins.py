"""Plugin loading (pluggy, entry-point group ``panel``) and the backend registry.

One ``PluginManager`` per app lives in ``app.extensions["panel"]``. Plugins load once, when the
app is created; ``PANEL_PLUGINS`` limits which entry points load and ``PANEL_SAFE_MODE=1`` loads
none. Backend settings come from, in order: ``PANEL_PLUGIN_<NAME>_<KEY>`` environment variables,
the ``plugin_settings`` table (secrets decrypted), then the schema defaults.

Stored settings (and each backend's enabled switch) are cached per process for
``PANEL_SETTINGS_CACHE_SECONDS`` (default 10): a job or a page does not read ``plugin_settings``
every time it needs a backend. A change made through ``set_setting``/``unset_setting`` takes
effect at once in the process that made it; other processes (web workers, ``panel worker``) see
it within that many seconds.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pluggy
from flask import current_app

from panel import hookspecs
from panel.backends import (Backend, PermanentBackendError, Schema, SchemaField, Secret, ValidationError,
                            schema_fields, validate_field)

log = logging.getLogger(__name__)

ENABLED_KEY = "_enabled"


class _Enabled(Schema):
    """The stored on/off switch of a backend (``panel plugins enable``)."""

    enabled: bool = False


class BackendNotConfigured(PermanentBackendError):
    """The backend is unknown, disabled, or lacks required settings (the message says which)."""


class PanelPlugins:
    """The app's plugin manager and the backends registered through ``register_backends``."""

    def __init__(self, app=None):
        self.pm = pluggy.PluginManager("panel")
        self.pm.add_hookspecs(hookspecs)
        self.backends: dict[str, type[Backend]] = {}
        self._instances: dict[str, tuple] = {}  # name -> (settings key, instance, stored settings)
        self._stored: dict[str, tuple[float, dict[str, Any]]] = {}  # name -> (read at, values)
        self._stored_lock = threading.Lock()
        self.cache_seconds = 10.0
        if app is not None:
            self.init_app(app)

    def init_app(self, app) -> None:
        """Load entry-point plugins (honouring ``PANEL_PLUGINS`` / ``PANEL_SAFE_MODE``), register in-
        process ones, collect backends.
        """
        if not app.config.get("SAFE_MODE"):
            allowed = app.config.get("PLUGINS")
            if allowed is None:
                self.pm.load_setuptools_entrypoints("panel")
            else:
                for name in allowed:
                    self.pm.load_setuptools_entrypoints("panel", name=name)
        for plugin in app.config.get("EXTRA_PLUGINS") or ():  # in-process plugins (tests)
            self.pm.register(plugin)
        self.pm.check_pending()
        self.collect_backends()
        self.cache_seconds = float(app.config.get("SETTINGS_CACHE_SECONDS", 10))
        app.extensions["panel"] = self

    def forget_settings(self, name: str | None = None) -> None:
        """Drop the cached stored settings of backend ``name`` (all backends with ``None``)."""
        with self._stored_lock:
            if name is None:
                self._stored.clear()
            else:
                self._stored.pop(name, None)

    def collect_backends(self) -> None:
        """(Re)run ``register_backends`` over every registered plugin."""
        found: dict[str, type[Backend]] = {}

        def register(cls: type[Backend]) -> None:
            if not (isinstance(cls, type) and issubclass(cls, Backend)) or not cls.name:
                raise TypeError(f"register_backends: {cls!r} is not a named Backend subclass")
            if cls.name in found and found[cls.name] is not cls:
                raise ValueError(f"two plugins register a backend named {cls.name!r}")
            found[cls.name] = cls

        self.pm.hook.register_backends(register=register)
        self.backends = found
        self._instances.clear()

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins."""
        return sorted(name for name, _ in self.pm.list_name_plugin())


def plugins() -> PanelPlugins:
    """The current app's ``PanelPlugins``."""
    return current_app.extensions["panel"]


def backend_class(name: str) -> type[Backend]:
    """The registered Backend class ``name``; raises ``BackendNotConfigured`` if none."""
    try:
        return plugins().backends[name]
    except KeyError:
        raise BackendNotConfigured(f"no backend named {name!r} is installed "
                                   f"(installed: {', '.join(sorted(plugins().backends)) or 'none'})") from None


def _env_overrides(name: str) -> dict[str, str]:
    prefix = name.upper().replace("-", "_") + "_"
    env = current_app.config.get("PLUGIN_ENV") or {}
    return {k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)}


def _stored(name: str) -> dict[str, Any]:
    """Backend ``name``'s rows of ``plugin_settings`` (secrets decrypted), cached for
    ``PANEL_SETTINGS_CACHE_SECONDS``. The returned mapping is shared: do not change it."""
    from panel import crypto
    from panel.extensions import db
    from panel.models import PluginSetting

    registry = plugins()
    now = time.monotonic()
    hit = registry._stored.get(name)
    if hit is not None and now - hit[0] < registry.cache_seconds:
        return hit[1]
    rows = db.session.scalars(db.select(PluginSetting).where(PluginSetting.plugin == name)).all()
    out: dict[str, Any] = {}
    for row in rows:
        out[row.key] = json.loads(crypto.decrypt(row.value) if row.secret else row.value)
    if registry.cache_seconds > 0:
        with registry._stored_lock:
            registry._stored[name] = (now, out)
    return out


def _field(cls: type[Backend], key: str) -> SchemaField:
    for f in schema_fields(cls.Settings):
        if f.name == key:
            return f
    raise ValidationError({key: f"is not a setting of {cls.name} (settings: "
                                f"{', '.join(f.name for f in schema_fields(cls.Settings)) or 'none'})"})


def raw_settings(name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, source) for backend ``name``: each value's source is "env", "db" or "default"."""
    cls = backend_class(name)
    stored = _stored(name)
    env = _env_overrides(name)
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for f in schema_fields(cls.Settings):
        if f.name in env:
            values[f.name], source[f.name] = env[f.name], "env"
        elif f.name in stored:
            values[f.name], source[f.name] = stored[f.name], "db"
        elif f.default is not None:
            values[f.name], source[f.name] = f.default, "default"
    return values, source


def is_enabled(name: str) -> bool:
    """Whether an operator enabled backend ``name`` (``panel plugins enable``)."""
    return bool(_stored(name).get(ENABLED_KEY, False)) if name in plugins().backends else False


def settings_for(name: str) -> dict[str, Any]:
    """Settings of backend ``name`` validated with its ``Settings`` schema (``validate_settings``),
    secrets as ``Secret``.

    Raises ``BackendNotConfigured`` naming every missing or invalid setting.
    """
    cls = backend_class(name)
    values, _ = raw_settings(name)
    try:
        return cls.validate_settings(values)
    except ValidationError as exc:
        raise BackendNotConfigured(f"{cls.name} is not configured: " + "; ".join(
            f"{k} {v} (panel plugins set {cls.name} {k} VALUE, or PANEL_PLUGIN_{cls.name.upper()}_{k.upper()})"
            for k, v in exc.errors.items())) from None


def get_backend(name: str) -> Backend:
    """A configured instance of backend ``name`` (cached until its settings change: the same
    instance, so its HTTP connections are reused, while the cached settings are the same).

    Raises ``BackendNotConfigured`` when it is unknown or its settings are incomplete.
    """
    cls = backend_class(name)
    cache = plugins()._instances
    stored = _stored(name)
    hit = cache.get(name)
    if hit and len(hit) == 3 and hit[2] is stored:  # the same cached settings: nothing to validate
        return hit[1]
    settings = settings_for(name)
    key = json.dumps({k: (v.reveal() if isinstance(v, Secret) else v) for k, v in settings.items()},
                     sort_keys=True, default=str)
    if hit and hit[0] == key:
        cache[name] = (key, hit[1], stored)
        return hit[1]
    instance = cls(settings)
    cache[name] = (key, instance, stored)
    return instance


def set_setting(name: str, key: str, value: Any) -> Any:
    """Validate and store setting ``key`` of backend ``name`` (secrets encrypted with Fernet).

    ``value`` may be a string (coerced by the ``Settings`` field's type; JSON text for object and
    list fields) or an already-typed value. The field's type, constraints and validators are
    checked (``panel.backends.validate_field``), then ``Backend.validate_setting``. Returns the
    stored value (a ``Secret`` for a secret). Raises ``ValidationError``.
    """
    from panel import crypto
    from panel.extensions import db
    from panel.models import PluginSetting

    cls = backend_class(name)
    if key == ENABLED_KEY:
        secret, clean = False, bool(validate_field(_Enabled, "enabled", value))
    else:
        secret = _field(cls, key).secret
        clean = cls.validate_setting(key, validate_field(cls.Settings, key, value))
    stored = json.dumps(clean.reveal() if isinstance(clean, Secret) else clean)
    row = db.session.scalar(db.select(PluginSetting).where(PluginSetting.plugin == name,
                                                           PluginSetting.key == key))
    if row is None:
        row = PluginSetting(plugin=name, key=key, value="")
        db.session.add(row)
    row.secret = secret
    row.value = crypto.encrypt(stored) if secret else stored
    db.session.commit()
    plugins().forget_settings(name)
    return clean


def update_settings(name: str, changes: dict[str, Any], *, unset: set[str] = frozenset()) -> list[tuple[str, Any]]:
    """Store several settings of backend ``name`` at once, all or nothing (the web settings form).

    ``changes`` maps setting keys to new values (strings from a form, coerced like ``set_setting``);
    ``unset`` names stored settings to remove (the default or environment value applies again).
    Every value is validated first (field type, constraints, validators, ``validate_setting``);
    a ``ValidationError`` naming each bad key is raised before anything is stored. Returns
    ``[(key, stored value or None for removed)]`` (secrets as ``Secret``).
    """
    cls = backend_class(name)
    errors: dict[str, str] = {}
    for key, value in changes.items():
        try:
            cls.validate_setting(key, validate_field(cls.Settings, key, value))
        except ValidationError as exc:
            errors[key] = exc.errors.get(key) or next(iter(exc.errors.values()), str(exc))
    if errors:
        raise ValidationError(errors)
    done: list[tuple[str, Any]] = []
    for key, value in changes.items():
        done.append((key, set_setting(name, key, value)))
    for key in sorted(unset):
        if unset_setting(name, key):
            done.append((key, None))
    return done


def unset_setting(name: str, key: str) -> bool:
    """Remove a stored setting; returns whether one existed."""
    from panel.extensions import db
    from panel.models import PluginSetting

    row = db.session.scalar(db.select(PluginSetting).where(PluginSetting.plugin == name,
                                                           PluginSetting.key == key))
    if row is None:
        return False
    db.session.delete(row)
    db.session.commit()
    plugins().forget_settings(name)
    return True


def set_enabled(name: str, enabled: bool) -> None:
    """Enable or disable backend ``name`` for new orders."""
    set_setting(name, ENABLED_KEY, enabled)


def notify_status_changed(snapshot, old: str, new: str) -> None:
    """Call every plugin's ``service_status_changed``; a failing plugin is logged, never raised."""
    try:
        plugins().pm.hook.service_status_changed(service=snapshot, old=old, new=new)
    except Exception:  # a plugin's audit/mail hook must never break a transition
        log.exception("a service_status_changed hook failed (service %s: %s -> %s)",
                      snapshot.id, old, new)

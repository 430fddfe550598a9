"""Schemas are pydantic models: plain-words field errors, secrets as ``Secret`` (a ``SecretStr``),
and the operator's settings (``panel plugins set``, the ``plugin_settings`` table,
``PANEL_PLUGIN_<NAME>_<KEY>``) validated through them."""
from __future__ import annotations

import json
import pickle
from typing import Any, Literal

import pytest
from pydantic import Field, SecretStr, field_validator

from panel import hookimpl
from panel.backends import (MASK, Backend, Schema, Secret, ValidationError, json_schema, schema_fields,
                            validate_field, validate_model)
from panel.extensions import db
from panel.models import PluginSetting


class Knobs(Schema):
    url: str = Field(title="API URL", pattern=r"^https?://\S+$", description="where the API is")
    token: SecretStr
    memory_mib: int = Field(512, ge=64, le=4096, json_schema_extra={"unit": "MiB"})
    region: Literal["eu", "us"] = "eu"
    name: str | None = Field(None, max_length=8)
    tags: list[str] = []
    extra: dict[str, Any] | None = None

    @field_validator("url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if "example.invalid" in value:
            raise ValueError("must not point at example.invalid")
        return value.rstrip("/")


def test_errors_are_per_field_in_plain_words():
    with pytest.raises(ValidationError) as info:
        validate_model(Knobs, {"url": "ftp://x", "memory_mib": 32, "region": "asia", "name": "far-too-long",
                               "tags": "[not json", "colour": "red"})
    assert info.value.errors == {
        "url": "has an invalid format", "token": "is required", "memory_mib": "must be at least 64 MiB",
        "region": "must be one of: eu, us", "name": "must be at most 8 characters",
        "tags": "is not valid JSON (Expecting value)", "colour": "is not a known field"}
    with pytest.raises(ValidationError) as info:
        validate_model(Knobs, {"url": "https://example.invalid", "token": "t", "memory_mib": "lots"})
    assert info.value.errors == {"url": "must not point at example.invalid", "memory_mib": "must be a whole number"}
    assert "url: must not point at example.invalid" in str(info.value)


def test_clean_values_are_plain_json_with_secrets_wrapped():
    clean = validate_model(Knobs, {"url": " https://api.test/ ", "token": "tok-123456", "memory_mib": "1024",
                                   "tags": '["a", "b"]', "name": "", "extra": '{"k": 1}'})
    assert clean == {"url": "https://api.test", "token": Secret("tok-123456"), "memory_mib": 1024,
                     "region": "eu", "tags": ["a", "b"], "extra": {"k": 1}}
    assert isinstance(clean["token"], Secret) and isinstance(clean["token"], SecretStr)
    assert "tok-123456" not in repr(clean) and MASK in repr(clean)
    json.dumps({k: v for k, v in clean.items() if k != "token"})


def test_secret_is_a_masked_unpicklable_secretstr():
    secret = Secret("ptla_abcdef")
    assert secret.reveal() == secret.get_secret_value() == "ptla_abcdef"
    assert repr(secret) == f"Secret({MASK!r})" and str(secret) == MASK
    assert secret == SecretStr("ptla_abcdef") and secret != Secret("other")
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert validate_model(Knobs, {"url": "http://x", "token": secret})["token"] is secret


def test_one_field_is_validated_on_its_own():
    assert validate_field(Knobs, "memory_mib", "128") == 128
    assert validate_field(Knobs, "tags", '["x"]') == ["x"]
    assert validate_field(Knobs, "name", "") is None
    with pytest.raises(ValidationError) as info:
        validate_field(Knobs, "url", "https://example.invalid")
    assert info.value.errors == {"url": "must not point at example.invalid"}
    with pytest.raises(ValidationError) as info:
        validate_field(Knobs, "nope", "1")
    assert list(info.value.errors) == ["nope"] and "is not a known field" in info.value.errors["nope"]


def test_schema_fields_read_the_json_schema():
    fields = {f.name: f for f in schema_fields(Knobs)}
    assert list(fields) == ["url", "token", "memory_mib", "region", "name", "tags", "extra"]
    assert fields["url"].title == "API URL" and fields["url"].required and fields["url"].description
    assert fields["token"].secret and not fields["url"].secret
    assert fields["memory_mib"].unit == "MiB" and fields["memory_mib"].type == "integer"
    assert fields["region"].choices == ("eu", "us") and fields["region"].default == "eu"
    assert fields["name"].type == "string" and not fields["name"].required  # the null alternative is gone
    assert fields["tags"].type == "array" and fields["extra"].type == "object"
    doc = json_schema(Knobs)
    assert doc["properties"]["token"]["writeOnly"] is True and doc["additionalProperties"] is False


class KnobsBackend(Backend):
    name = "knobs"
    Settings = Knobs

    def provision(self, spec):  # pragma: no cover - never called here
        raise NotImplementedError


class KnobsPlugin:
    @hookimpl
    def register_backends(self, register):
        register(KnobsBackend)


@pytest.fixture
def knobs_app(make_app):
    from memory_backend import MemoryPlugin

    app = make_app(EXTRA_PLUGINS=[MemoryPlugin(), KnobsPlugin()], PLUGIN_ENV={"KNOBS_MEMORY_MIB": "2048",
                                                              "KNOBS_TAGS": '["from-env"]'})
    with app.app_context():
        yield app


def test_operator_settings_go_through_the_schema(knobs_app):
    from panel.plugins import BackendNotConfigured, get_backend, raw_settings, set_setting, settings_for

    with pytest.raises(BackendNotConfigured) as info:
        settings_for("knobs")
    assert "url is required" in str(info.value) and "token is required" in str(info.value)
    assert set_setting("knobs", "url", "https://api.test/") == "https://api.test"
    stored = set_setting("knobs", "token", "tok-secret-987")
    assert isinstance(stored, Secret)
    row = db.session.scalar(db.select(PluginSetting).where(PluginSetting.key == "token"))
    assert row.secret and "tok-secret-987" not in row.value  # encrypted at rest
    with pytest.raises(ValidationError) as bad:
        set_setting("knobs", "memory_mib", "9999")
    assert bad.value.errors == {"memory_mib": "must be at most 4096 MiB"}
    with pytest.raises(ValidationError):
        set_setting("knobs", "url", "https://example.invalid")  # the field validator runs on store
    values, source = raw_settings("knobs")
    assert source == {"url": "db", "token": "db", "memory_mib": "env", "region": "default", "tags": "env"}
    clean = settings_for("knobs")  # env text is coerced by the schema: an int and a JSON list
    assert clean["memory_mib"] == 2048 and clean["tags"] == ["from-env"] and clean["token"].reveal() == "tok-secret-987"
    backend = get_backend("knobs")
    assert isinstance(backend.settings["token"], Secret) and "tok-secret-987" not in repr(backend)


def test_the_cli_lists_settings_from_the_schema(knobs_app):
    from panel.plugins import set_setting

    from panel.cli import cli

    set_setting("knobs", "token", "tok-secret-987")
    out = knobs_app.test_cli_runner().invoke(cli, args=["plugins", "list"]).output
    assert f"token = {MASK} [db]" in out and "tok-secret-987" not in out
    assert "url =  [unset] (required)" in out and "memory_mib = 2048 [env]" in out
    bad = knobs_app.test_cli_runner().invoke(cli, args=["plugins", "set", "knobs", "region", "asia"])
    assert bad.exit_code != 0 and "region: must be one of: eu, us" in bad.output


def test_a_plain_string_secret_given_to_a_backend_is_wrapped():
    backend = KnobsBackend({"url": "http://x", "token": "plain-token-1"})
    assert isinstance(backend.settings["token"], Secret) and "plain-token-1" not in repr(backend)

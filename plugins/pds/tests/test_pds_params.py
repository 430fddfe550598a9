"""Order params, settings and the pure helpers: username/hostname cleaning, fallbacks, parsing."""
from __future__ import annotations

import dataclasses

import pytest

from panel.backends import MASK, PermanentBackendError, Secret, ValidationError, schema_fields
from panel.testing import make_spec
from panel_pds.backend import (PdsBackend, clean_hostname, decode_json_body, normalize_username,
                               parse_storage_gib, username_from_email)
from pds_testlib import TOKEN, make_backend

OFFLINE = "http://127.0.0.1:9"  # never contacted by these tests


@pytest.mark.parametrize("raw, expected", [
    ("alice", "alice"),
    ("  ALICE  ", "alice"),
    ("John.Doe", "john-doe"),
    ("a_b  c", "a-b-c"),
    ("-bob-", "bob"),
    ("ünïcode", "n-code"),
    ("x" * 63, "x" * 63),
])
def test_normalize_username(raw, expected):
    assert normalize_username(raw) == expected


@pytest.mark.parametrize("raw, message", [
    ("---", "at least one letter or digit"),
    ("!!!", "at least one letter or digit"),
    ("x" * 64, "at most 63 characters"),
])
def test_normalize_username_rejects(raw, message):
    with pytest.raises(ValueError, match=message):
        normalize_username(raw)


@pytest.mark.parametrize("email, expected", [
    ("Jane.Doe+pds@Example.com", "jane-doe"),
    ("bob@example.test", "bob"),
    ("a" * 70 + "@example.test", "a" * 63),
    ("+++@example.test", None),
    ("", None),
])
def test_username_from_email(email, expected):
    assert username_from_email(email) == expected


@pytest.mark.parametrize("raw, expected", [
    ("pds.example.com", "pds.example.com"),
    ("https://PDS.Example.com:443/xrpc/_health?x=1", "pds.example.com"),
    ("http://admin:pw@pds.example.com/", "pds.example.com"),
    ("pds.example.com.", "pds.example.com"),
    ("pds.example.com:2583", "pds.example.com"),
    ("Bücher.example", "xn--bcher-kva.example"),
])
def test_clean_hostname(raw, expected):
    assert clean_hostname(raw) == expected


@pytest.mark.parametrize("raw, message", [
    ("localhost", "fully qualified"),
    ("-bad.example.com", "invalid label '-bad'"),
    ("exa mple.com", "invalid label"),
    ("a..example.com", "invalid label ''"),
    ("10.0.0.1", "not an IP address"),
    ("[::1]:80", "not an IP address"),
    ("https://", "fully qualified"),
    ("x" * 64 + ".example.com", "invalid label"),
])
def test_clean_hostname_rejects(raw, message):
    with pytest.raises(ValueError, match=message):
        clean_hostname(raw)


def test_validate_order_params_cleans_values():
    backend = make_backend(OFFLINE)
    clean = backend.validate_order_params({"username": "Jane.Doe", "hostname": "https://My.PDS.example.org/"}, {})
    assert clean == {"username": "jane-doe", "hostname": "my.pds.example.org"}
    assert backend.validate_order_params({}, {}) == {}


def test_validate_order_params_field_level_errors():
    backend = make_backend(OFFLINE)
    with pytest.raises(ValidationError) as info:
        backend.validate_order_params({"username": "***", "hostname": "not a host", "colour": "red"}, {})
    errors = info.value.errors
    assert set(errors) == {"username", "hostname", "colour"}
    assert "letter or digit" in errors["username"]
    assert "invalid label" in errors["hostname"] or "fully qualified" in errors["hostname"]
    assert errors["colour"] == "is not a known field"


def test_plan_options_disksize_is_validated():
    backend = make_backend(OFFLINE)
    assert backend.validate_plan_options({"disksize_gb": "25"}) == {"disksize_gb": 25}
    with pytest.raises(ValidationError) as info:
        backend.validate_plan_options({"disksize_gb": 0})
    assert "at least 1 GiB" in info.value.errors["disksize_gb"]


def test_target_fallbacks_from_email_and_settings():
    backend = make_backend(OFFLINE, hostname_domain="eny.k8s.frx.pub", default_disksize_gb=12)
    spec = make_spec(backend, email="Jane.Doe+x@Example.com")
    target = backend.target(spec)
    assert (target.username, target.hostname, target.email, target.disksize_gb) == (
        "jane-doe", "jane-doe.eny.k8s.frx.pub", "Jane.Doe+x@Example.com", 12)
    # explicit params and plan size win over the fallbacks
    spec = make_spec(backend, params={"username": "Bob", "hostname": "pds.bob.example"},
                     options={"disksize_gb": 40})
    target = backend.target(spec)
    assert (target.username, target.hostname, target.disksize_gb) == ("bob", "pds.bob.example", 40)
    # an explicit username without hostname gives <username>.<hostname_domain>
    spec = make_spec(backend, params={"username": "Carol"})
    assert backend.target(spec).hostname == "carol.eny.k8s.frx.pub"


def test_target_without_usable_username_is_a_field_error():
    backend = make_backend(OFFLINE)
    spec = make_spec(backend, email="+++@example.test")
    with pytest.raises(PermanentBackendError) as info:
        backend.target(spec)
    assert "username" in info.value.fields
    assert "email" in info.value.fields["username"]


def test_default_settings_and_secret_schema():
    backend = make_backend(OFFLINE)
    assert backend.settings["hostname_domain"] == "pds.example.test"
    assert backend.settings["default_disksize_gb"] == 10
    schema = {f.name: f for f in schema_fields(PdsBackend.Settings)}
    assert schema["api_token"].secret and schema["api_token"].required and schema["api_url"].required
    assert schema["default_disksize_gb"].unit == "GiB"
    assert PdsBackend.name == "pds" and PdsBackend.label == "AT Protocol PDS"


def test_plain_string_token_is_wrapped_and_masked():
    backend = PdsBackend({"api_url": OFFLINE, "api_token": TOKEN})
    assert isinstance(backend.settings["api_token"], Secret)
    assert TOKEN not in repr(backend) and MASK in repr(backend)


@pytest.mark.parametrize("settings, message", [
    ({"api_url": "ftp://example.test", "api_token": "abcd"}, "api_url"),
    ({"api_url": "", "api_token": "abcd"}, "api_url"),
    ({"api_url": "http://127.0.0.1:9", "api_token": ""}, "api_token"),
    ({"api_url": "http://127.0.0.1:9", "api_token": "abcd", "hostname_domain": "bad domain"}, "hostname_domain"),
])
def test_invalid_settings_fail_operations_permanently(settings, message):
    backend = PdsBackend(settings)
    spec = make_spec(make_backend(OFFLINE))
    with pytest.raises(PermanentBackendError, match=message):
        backend.provision(spec)


@pytest.mark.parametrize("text, expected", [
    ('{"id": 1}', {"id": 1}),
    ('"{\\"id\\": 1, \\"state\\": \\"running\\"}"', {"id": 1, "state": "running"}),
    ('"just a string"', "just a string"),
    ("", {}),
])
def test_decode_json_body(text, expected):
    assert decode_json_body(text) == expected


def test_decode_json_body_rejects_html():
    with pytest.raises(ValueError):
        decode_json_body("<html>nope</html>")


@pytest.mark.parametrize("value, expected", [
    (10, 10.0), ("10Gi", 10.0), ("512Mi", 0.5), ("10", 10.0), ("1Ti", 1024.0),
    ("10G", 9.313), ("lots", None), (None, None), (True, None),
])
def test_parse_storage_gib(value, expected):
    assert parse_storage_gib(value) == expected


def test_spec_repr_and_target_never_show_password():
    backend = make_backend(OFFLINE)
    spec = dataclasses.replace(make_spec(backend), secrets={"admin_password": Secret("hunter2-long-password")})
    assert "hunter2-long-password" not in repr(spec) + repr(backend.target(spec))


def test_claim_key_is_the_hostname_a_deploy_would_use():
    """The core refuses a second order holding the same key (one panel service per PDS host)."""
    from panel.backends import Secret, ServiceSpec
    from panel_pds.backend import PdsBackend

    backend = PdsBackend({"api_url": "http://127.0.0.1:9", "api_token": Secret("t"),
                          "hostname_domain": "pds.example.com"})
    draft = ServiceSpec(service_id=0, external_id="", plan="p", options={}, params={},
                        customer_id=1, customer_email="Alice.Smith@example.com")
    field, value = backend.claim_key(draft)
    assert field == "hostname" and value == backend.target(draft).hostname
    assert value.endswith(".pds.example.com")
    custom = ServiceSpec(service_id=0, external_id="", plan="p", options={}, params={"hostname": "me.example.org"},
                         customer_id=1, customer_email="a@example.com")
    assert backend.claim_key(custom) == ("hostname", "me.example.org")

"""Order params, plan options, settings, naming helpers, kubeconfig and secrets."""
from __future__ import annotations

import json
import logging

import pytest
import yaml

from k8s_testlib import TOKEN, make_backend, ours, spec_for
from panel.backends import BackendError, PermanentBackendError, Secret, ValidationError
from panel_kubernetes.backend import (KubernetesBackend, cpu_quantity, name_from_external_id, package_diff,
                                      parse_quantity, render_template)


@pytest.fixture
def offline():
    """A backend that is never called over the network (validation only)."""
    return make_backend("http://127.0.0.1:9")


# --------------------------------------------------------------------------- tenant_name

@pytest.mark.parametrize("value, message", [
    ("Alice", "must be lower case"),
    ("al_ice", "may contain only lower case letters a-z, digits 0-9 and '-' (not '_')"),
    ("alice.example", "may contain only"),
    ("-alice", "must start and end with a letter or digit"),
    ("alice-", "must start and end with a letter or digit"),
    ("a" * 61, "must be at most 60 characters (the name prefix 'hp-' takes the rest of 63)"),
    (42, "must be a string"),
])
def test_tenant_name_validation_messages(offline, value, message):
    with pytest.raises(ValidationError) as info:
        offline.validate_order_params({"tenant_name": value}, {})
    assert set(info.value.errors) == {"tenant_name"}
    assert message in info.value.errors["tenant_name"]


def test_tenant_name_accepts_dns_labels_up_to_the_room_left_by_the_prefix(offline):
    assert offline.validate_order_params({"tenant_name": "a" * 60}, {}) == {"tenant_name": "a" * 60}
    assert offline.validate_order_params({"tenant_name": " acme-01 "}, {}) == {"tenant_name": "acme-01"}
    no_prefix = make_backend("http://127.0.0.1:9", name_prefix="")
    assert no_prefix.validate_order_params({"tenant_name": "b" * 63}, {}) == {"tenant_name": "b" * 63}
    with pytest.raises(ValidationError):
        no_prefix.validate_order_params({"tenant_name": "b" * 64}, {})
    dash = make_backend("http://127.0.0.1:9", name_prefix="-")  # how an operator stores "no prefix"
    assert dash.settings["name_prefix"] == ""
    assert dash.cr_name(spec_for(dash, params={"tenant_name": "c" * 63})) == "c" * 63
    assert KubernetesBackend.validate_setting("name_prefix", "-") == "-"


def test_tenant_name_is_optional_and_unknown_params_are_refused(offline):
    assert offline.validate_order_params({}, {}) == {}
    assert offline.validate_order_params({"tenant_name": ""}, {}) == {}
    with pytest.raises(ValidationError) as info:
        offline.validate_order_params({"hostname": "x"}, {})
    assert info.value.errors == {"hostname": "is not a known field"}


def test_claim_key_is_the_tenant_name(offline):
    assert offline.claim_key(spec_for(offline, params={"tenant_name": "zed"})) == ("tenant_name", "zed")
    assert offline.claim_key(spec_for(offline)) is None


# --------------------------------------------------------------------------- plan options

def test_plan_options_validate_packages_and_units(offline):
    clean = offline.validate_plan_options({"packages": '["a", "b"]', "cpu": "0.5", "memory_mib": 512})
    assert clean["packages"] == ["a", "b"] and clean["cpu"] == 0.5 and clean["memory_mib"] == 512
    assert offline.validate_plan_options({})["packages"] == []
    for bad, message in ([{"packages": {"a": 1}}, "must be a JSON list"], [{"packages": ["a", "a"]}, "twice"],
                         [{"packages": ["has space"]}, "invalid package name"], [{"packages": [1]}, "invalid package"],
                         [{"packages": "not json"}, "must be a JSON list"]):
        with pytest.raises(ValidationError) as info:
            offline.validate_plan_options(bad)
        assert message in info.value.errors["packages"]
    with pytest.raises(ValidationError) as info:
        offline.validate_plan_options({"cpu": 0, "memory_mib": "lots"})
    assert set(info.value.errors) == {"cpu", "memory_mib"}


# --------------------------------------------------------------------------- settings

@pytest.mark.parametrize("key, value, message", [
    ("api_url", "k8s.example.com", "http:// or https://"),
    ("api_url", "https://user:pw@k8s.example.com", "must not carry credentials"),
    ("group", "tenants", "API group"),
    ("version", "1", "API version"),
    ("plural", "Tenants", "lower case"),
    ("namespace", "my_ns", "may contain only"),
    ("kind", "tenant", "CamelCase"),
    ("name_prefix", "HP-", "lower case"),
    ("spec_template", "[1]", "JSON object"),
    ("spec_template", {"x": "{nope}"}, "unknown placeholder {nope}"),
    ("spec_template", {"suspend": True}, "must not set spec.suspend"),
    ("ca_cert", "not pem", "PEM"),
])
def test_validate_setting_rejects_bad_values(key, value, message):
    with pytest.raises(ValidationError) as info:
        KubernetesBackend.validate_setting(key, value)
    assert message in info.value.errors[key]


def test_validate_setting_accepts_good_values():
    url = KubernetesBackend.validate_setting("api_url", "https://k8s.example.com:6443/")
    assert url == "https://k8s.example.com:6443"
    assert KubernetesBackend.validate_setting("spec_template", '{"domain": "{tenant_name}.x.dev"}') == {
        "domain": "{tenant_name}.x.dev"}
    assert KubernetesBackend.validate_setting("group", "pieced.ch") == "pieced.ch"
    assert KubernetesBackend.validate_setting("version", "v1beta2") == "v1beta2"


def test_a_kubeconfig_that_is_not_yaml_is_refused_without_quoting_it():
    text = "apiVersion: v1\nusers: [{name: u, user: {token: s3cret-kube-token}}\n  bad: : :"
    with pytest.raises(ValidationError) as info:
        KubernetesBackend.validate_setting("kubeconfig", Secret(text))
    assert "not valid YAML" in info.value.errors["kubeconfig"]
    assert "s3cret" not in str(info.value)
    with pytest.raises(ValidationError, match="not a kubeconfig"):
        KubernetesBackend.validate_setting("kubeconfig", Secret("just: a map"))


def test_a_backend_without_server_settings_fails_permanently():
    backend = KubernetesBackend({"token": Secret(TOKEN)})
    with pytest.raises(PermanentBackendError, match="set api_url"):
        backend.provision(spec_for(backend))
    broken = KubernetesBackend({"api_url": "http://127.0.0.1:9", "namespace": "Bad_NS"})
    with pytest.raises(PermanentBackendError, match="misconfigured: namespace"):
        broken.terminate(spec_for(broken))


# --------------------------------------------------------------------------- helpers

def test_name_from_external_id():
    assert name_from_external_id("hp-1f52b066dd4080f4", "hp-") == "hp-1f52b066dd4080f4"
    assert name_from_external_id("svc_42", "hp-") == "hp-svc-42"
    long_a, long_b = "hp-" + "a" * 80 + "1", "hp-" + "a" * 80 + "2"
    a, b = name_from_external_id(long_a, "hp-"), name_from_external_id(long_b, "hp-")
    assert len(a) <= 63 and len(b) <= 63 and a != b


def test_render_template_keeps_types_and_reports_unknown_placeholders():
    out = render_template({"n": "{cpu}", "s": "cpu={cpu}", "l": ["{name}"], "{name}-key": 1}, {"cpu": 2, "name": "t"})
    assert out == {"n": 2, "s": "cpu=2", "l": ["t"], "t-key": 1}
    with pytest.raises(KeyError):
        render_template("{missing}", {})


def test_quantities_and_package_diff():
    assert cpu_quantity(0.5) == "500m" and cpu_quantity(2) == "2" and cpu_quantity(1.25) == "1250m"
    assert parse_quantity("250m") == parse_quantity(0.25)
    assert parse_quantity("1Gi") == 1024 ** 3 and parse_quantity("1G") == 1000 ** 3 and parse_quantity("x") is None
    assert package_diff(["a", "b"], ["b", "c", "c"]) == (["c"], ["a"])


# --------------------------------------------------------------------------- kubeconfig and secrets

def _kubeconfig(url: str, token: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": url}}],
        "users": [{"name": "panel", "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "panel"}}],
    })


def test_kubeconfig_alone_configures_the_client(standin):
    backend = make_backend("", token="", kubeconfig=Secret(_kubeconfig(standin.url, TOKEN)))
    spec = spec_for(backend, params={"tenant_name": "kc"})
    assert backend.provision(spec).resource_id == "hp-kc"
    assert len(ours(standin, spec)) == 1
    assert "(kubeconfig)" in backend.test_connection()


def test_a_kubeconfig_whose_user_is_refused_is_permanent(standin):
    backend = make_backend("", token="", kubeconfig=Secret(_kubeconfig(standin.url, "kubeconfig-token-refused")))
    with pytest.raises(PermanentBackendError, match="401"):
        backend.provision(spec_for(backend))


def test_secrets_never_leak_into_repr_logs_details_or_errors(standin, caplog):
    caplog.set_level(logging.DEBUG)
    kubeconfig_token = "kc-secret-" + "9" * 12
    standin.extra_tokens.add(kubeconfig_token)
    backend = make_backend(standin.url)
    via_kubeconfig = make_backend("", token="", kubeconfig=Secret(_kubeconfig(standin.url, kubeconfig_token)))
    spec = spec_for(backend, params={"tenant_name": "leak"})
    result = backend.provision(spec)
    texts = [repr(backend), repr(via_kubeconfig), repr(result), json.dumps(backend.details(spec), default=str),
             json.dumps(dict(result.data), default=str), repr(backend.usage(spec))]
    # an upstream that echoes the Authorization header back must not make us repeat it
    standin.fail_next("get", 500, message=f"proxy error: header Authorization: Bearer {TOKEN}")
    standin.fail_next("create", 422, message=f"invalid token {kubeconfig_token}")
    for call in (lambda: backend.details(spec), lambda: via_kubeconfig.provision(spec_for(via_kubeconfig)),
                 lambda: make_backend(standin.url, token="wrong-token-value").provision(spec_for(backend))):
        with pytest.raises(BackendError) as info:
            call()
        texts.append(str(info.value) + repr(info.value))
    assert "500" in texts[-3] and "422" in texts[-2] and "401" in texts[-1]
    haystack = "\n".join(texts + [caplog.text, json.dumps(standin.requests, default=str)])
    for secret in (TOKEN, kubeconfig_token, "wrong-token-value"):
        assert secret not in haystack
    assert "Bearer ••••••••" in haystack  # the echoed header was masked, not dropped silently

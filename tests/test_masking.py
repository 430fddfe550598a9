"""``mask_secrets``: every secret-looking key the backends return is masked wherever it is nested.

The keys come from reading the four plugins (and the core's memory test backend):

* pds: ``details()["encrypted_config"]["adminPassword"]`` (the PDS host's config, as its deploy API
  returns it), ``Provisioned.secrets["admin_password"]``; a PDS config may also carry
  ``jwtSecret`` and ``plcRotationKeyK256PrivateKeyHex`` (the PDS_* environment in camelCase);
* docker: ``Provisioned.secrets["database_password"]`` and ``["jwt_secret"]``;
* pterodactyl and kubernetes: their details and ``Provisioned.data`` carry no secret-looking key
  (their secrets are the settings ``application_api_key``, ``client_api_key``, ``token``);
* memory (tests/memory_backend.py): ``password`` at the top, in ``config`` and in a list.

A secret key is masked at the top level, inside nested mappings, inside lists and tuples, and in
mappings inside lists; other keys keep their values; the input is not changed.
"""
from __future__ import annotations

import copy
import json
import urllib.request

import pytest
from corelib import login, token_for, wait_jobs

from panel.backends import MASK, SECRET_KEY_PATTERN, Secret, mask_secrets

VALUE = "hunter2-Very-Secret-Value"

RETURNED_KEYS = [
    ("pds", "adminPassword"), ("pds", "admin_password"), ("pds", "jwtSecret"),
    ("pds", "plcRotationKeyK256PrivateKeyHex"),
    ("docker", "database_password"), ("docker", "jwt_secret"),
    ("pterodactyl", "application_api_key"), ("pterodactyl", "client_api_key"),
    ("kubernetes", "token"), ("pds", "api_token"),
    ("memory", "password"), ("memory", "root_password"),
]

# Where a key can sit: a function that nests {key: value} and the path back to it.
NESTINGS = {
    "top": (lambda entry: entry, ()),
    "mapping": (lambda entry: {"encrypted_config": entry}, ("encrypted_config",)),
    "deep mapping": (lambda entry: {"a": {"b": {"c": entry}}}, ("a", "b", "c")),
    "list": (lambda entry: {"accounts": [{"user": "x"}, entry]}, ("accounts", 1)),
    "tuple": (lambda entry: {"accounts": ({"user": "x"}, entry)}, ("accounts", 1)),
    "list in mapping in list": (lambda entry: [{"nodes": [entry]}], (0, "nodes", 0)),
}


def dig(value, path):
    for step in path:
        value = value[step]
    return value


@pytest.mark.parametrize("backend,key", RETURNED_KEYS, ids=[f"{b}-{k}" for b, k in RETURNED_KEYS])
@pytest.mark.parametrize("nesting", list(NESTINGS))
def test_a_secret_key_is_masked_wherever_it_is_nested(backend, key, nesting):
    wrap, path = NESTINGS[nesting]
    original = wrap({key: VALUE, "hostname": "alice.example.com"})
    before = copy.deepcopy(original)
    masked = mask_secrets(original)
    assert dig(masked, path) == {key: MASK, "hostname": "alice.example.com"}
    assert VALUE not in json.dumps(masked)
    assert original == before, "mask_secrets changed its input"


def test_the_keys_the_backends_return_look_secret():
    for _, key in RETURNED_KEYS:
        assert SECRET_KEY_PATTERN.search(key), key


@pytest.mark.parametrize("key", ["hostname", "username", "email", "state", "storage_gb", "kubeconfig_id"])
def test_other_keys_keep_their_values(key):
    value = {key: "kept", "nested": [{key: "kept"}]}
    assert mask_secrets(value) == value


def test_secret_values_are_masked_under_any_key_and_empty_secrets_stay_empty():
    value = {"note": Secret(VALUE), "items": [Secret(VALUE), "plain"], "password": "", "token": None,
             "count": 3, "ratio": 0.5, "ok": True}
    assert mask_secrets(value) == {"note": MASK, "items": [MASK, "plain"], "password": "", "token": None,
                                   "count": 3, "ratio": 0.5, "ok": True}


@pytest.mark.parametrize("url,masked", [
    ("postgresql://app_12:%s@db.internal:5432/app_12" % VALUE, "postgresql://app_12:%s@db.internal:5432/app_12" % MASK),
    ("redis://:%s@127.0.0.1:6379/3" % VALUE, "redis://:%s@127.0.0.1:6379/3" % MASK),
    ("see amqp://bus:%s@mq/vhost now" % VALUE, "see amqp://bus:%s@mq/vhost now" % MASK),
])
def test_the_password_in_a_url_is_masked_under_any_key(url, masked):
    """Docker's ``DATABASE_URL``/``REDIS_URL`` carry the password in the URL's userinfo; the key
    (``database_url``, ``env``) does not look secret, the user and host stay readable."""
    value = {"database_url": url, "env": [{"REDIS_URL": url}], "kubeconfig": "apiVersion: v1"}
    out = mask_secrets(value)
    assert out["database_url"] == masked and out["env"][0]["REDIS_URL"] == masked
    assert out["kubeconfig"] == MASK and VALUE not in json.dumps(out)


@pytest.mark.parametrize("text", ["https://example.com/a:b@c", "https://user@example.com/", "mailto:a@b.c",
                                  "http://example.com:8080/path", "http://example.com:8080/p@th"])
def test_urls_without_a_password_keep_their_text(text):
    assert mask_secrets({"url": text}) == {"url": text}


def test_a_secret_key_holding_a_mapping_is_masked_whole():
    assert mask_secrets({"credentials": {"user": "u", "key": VALUE}}) == {"credentials": MASK}


def test_pds_details_as_the_deploy_api_returns_them():
    """The PDS stand-in's real ``GET /api/v1/service/{id}`` answer: ``adminPassword`` nests in
    ``encrypted_config``."""
    from panel_pds.standin import PdsStandIn

    with PdsStandIn(token="mask-token") as standin:
        body = json.dumps({"username": "alice", "password": VALUE, "email": "a@example.com",
                           "hostname": "alice.pds.example.com", "disksize": 5}).encode()
        headers = {"Authorization": "Bearer mask-token", "Content-Type": "application/json"}
        request = urllib.request.Request(standin.url + "/api/v1/deploy", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
        service_id = standin.services()[0]["id"]
        request = urllib.request.Request(f"{standin.url}/api/v1/service/{service_id}", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = json.loads(answer.read())
    if isinstance(raw, str):  # the stand-in can double-encode, like some PDS hosts
        raw = json.loads(raw)
    assert raw["encrypted_config"]["adminPassword"] == VALUE  # the shape the masking must handle
    masked = mask_secrets(raw)
    assert masked["encrypted_config"]["adminPassword"] == MASK
    assert masked["encrypted_config"]["hostname"] == "alice.pds.example.com"
    assert VALUE not in json.dumps(masked)


def test_nested_secrets_never_reach_the_api_or_the_service_page(app, client, customer, operator, plans):
    """The memory backend nests its root password in a mapping and a list (as PDS does): operators
    get the raw details with it masked; the customer's API answer has no raw details at all."""
    from panel.orders import place_order

    svc = place_order(customer, "mem-free", {"name": "nest"}, actor="test").service
    wait_jobs(app)
    api = client.get(f"/api/v1/services/{svc.id}", headers=token_for(operator))
    details = api.get_json()["service"]["details"]
    assert details["config"]["adminPassword"] == MASK and details["accounts"][0]["password"] == MASK
    assert "s3cret-root-pw" not in api.get_data(as_text=True)
    own = client.get(f"/api/v1/services/{svc.id}", headers=token_for(customer))
    assert "details" not in own.get_json()["service"] and "s3cret-root-pw" not in own.get_data(as_text=True)
    login(client, customer.email)
    page = client.get(f"/services/{svc.id}").get_data(as_text=True)
    assert "nest" in page and "s3cret-root-pw" not in page
    client.post("/logout")
    login(client, operator.email)
    page = client.get(f"/admin/services/{svc.id}").get_data(as_text=True)
    assert "s3cret-root-pw" not in page and MASK in page


def test_secret_looking_order_params_are_masked_in_the_api(app, client, customer, plans):
    """Order params are shown back to the customer: a secret-looking one (nested too) is masked."""
    from panel.extensions import db
    from panel.models import Service

    svc = Service(user=customer, plan=plans["paid"], backend="memory", status="pending_payment",
                  params={"name": "p1", "admin_password": VALUE, "extra": {"api_key": VALUE}})
    db.session.add(svc)
    db.session.commit()
    body = client.get(f"/api/v1/services/{svc.id}", headers=token_for(customer)).get_json()
    assert body["service"]["params"] == {"name": "p1", "admin_password": MASK, "extra": {"api_key": MASK}}

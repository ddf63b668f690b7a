"""deploy/brokers: the external broker configs call exactly the hooks the API serves, with exactly
the fields api/hooks.py reads, deny by default, and keep $SYS closed."""

from __future__ import annotations

import json
import re

from api import hooks
from tests.deploy.support import BROKERS, api_paths

EMQX = (BROKERS / "emqx" / "emqx.conf").read_text()
VERNEMQ = (BROKERS / "vernemq" / "vernemq.conf").read_text()
MOSQUITTO = (BROKERS / "mosquitto" / "mosquitto.conf").read_text()


def settings_lines(text: str) -> str:
    """The text without comments (HOCON `#`/`//`, cuttlefish `#`)."""
    kept = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return "\n".join(re.sub(r"\s(#|//).*$", "", line) for line in kept)


def emqx_requests() -> dict[str, dict[str, str]]:
    """Hook path → the JSON body template EMQX sends (each `url = ...` followed by its `body = {...}`)."""
    found: dict[str, dict[str, str]] = {}
    for url, body in re.findall(r'url\s*=\s*"http://[^/"]+(/[^"]*)".*?body\s*=\s*(\{[^\n]*\})',
                                settings_lines(EMQX), flags=re.S):
        found[url] = json.loads(body)
    return found


def test_emqx_hook_bodies_carry_exactly_the_fields_the_hooks_read() -> None:
    requests = emqx_requests()
    assert set(requests) == {"/hooks/emqx/authn", "/hooks/emqx/authz"}
    assert set(requests["/hooks/emqx/authn"]) == set(hooks.EmqxAuthn.model_fields)
    assert set(requests["/hooks/emqx/authz"]) == set(hooks.EmqxAuthz.model_fields)
    for body in requests.values():
        for field, template in body.items():
            assert template == "${" + field + "}", (field, template)  # EMQX placeholder of that field


def test_emqx_sends_the_hooks_secret() -> None:
    headers = re.findall(r"^\s*headers\s*\{(.*)\}\s*$", settings_lines(EMQX), flags=re.M)
    assert len(headers) == 2
    for line in headers:
        assert '"authorization" = "Bearer "${MQCHAT_HTTP__HOOKS_SECRET}' in line


def test_emqx_hooks_are_served_by_the_api_as_post() -> None:
    served = api_paths()
    for path in emqx_requests():
        assert "POST" in served[path]
    assert len(re.findall(r"^\s*method\s*=\s*post\s*$", settings_lines(EMQX), flags=re.M)) == 2


def test_emqx_denies_by_default_and_closes_sys() -> None:
    conf = settings_lines(EMQX)
    assert re.search(r"^\s*no_match\s*=\s*deny\s*$", conf, flags=re.M)
    # The only authorization source is the hook (the default list has a permissive acl.conf file).
    sources = re.search(r"sources\s*=\s*\[(.*?)\n\s*\]", conf, flags=re.S)
    assert sources is not None
    assert re.findall(r"type\s*=\s*(\w+)", sources.group(1)) == ["http"]
    assert re.search(r"mechanism\s*=\s*password_based", conf)
    assert "allow_anonymous" not in conf or re.search(r"allow_anonymous\s*=\s*false", conf)
    assert re.search(r"sys_msg_interval\s*=\s*disabled", conf)
    assert re.search(r"sys_heartbeat_interval\s*=\s*disabled", conf)


def test_vernemq_webhooks_are_the_three_the_hook_answers() -> None:
    conf = settings_lines(VERNEMQ)
    names = dict(re.findall(r"^vmq_webhooks\.(\w+)\.hook\s*=\s*(\w+)", conf, flags=re.M))
    endpoints = dict(re.findall(r"^vmq_webhooks\.(\w+)\.endpoint\s*=\s*(\S+)", conf, flags=re.M))
    assert sorted(names.values()) == ["auth_on_publish", "auth_on_register", "auth_on_subscribe"]
    assert set(endpoints) == set(names)
    served = api_paths()
    for url in endpoints.values():
        path, _, query = re.sub(r"^http://[^/]+", "", url).partition("?")
        assert path == "/hooks/vernemq"
        assert query.startswith("secret="), "the hooks answer only the holder of http.hooks_secret"
        assert "POST" in served[path]
    hook_source = (BROKERS.parents[1] / "api" / "hooks.py").read_text()
    for hook in names.values():
        assert f'vernemq_hook == "{hook}"' in hook_source
    for line in ("allow_anonymous = off", "plugins.vmq_passwd = off", "plugins.vmq_acl = off",
                 "plugins.vmq_webhooks = on", "systree_enabled = off"):
        assert line in conf.splitlines()


def test_mosquitto_is_loopback_only_and_says_what_it_does_not_enforce() -> None:
    conf = settings_lines(MOSQUITTO)
    listeners = re.findall(r"^listener (\d+)(?: (\S+))?", conf, flags=re.M)
    assert listeners
    assert all(host == "127.0.0.1" for _, host in listeners)
    assert "plugin" not in conf.split()  # no auth plugin enabled: there is no endpoint for it yet
    for topic in ("identity", "topic ACL", "presence leases"):
        assert topic in MOSQUITTO
    # The go-auth section names endpoints that must not be mistaken for existing ones.
    for path in re.findall(r"auth_opt_http_\w+_uri (\S+)", MOSQUITTO):
        assert path not in api_paths()

from __future__ import annotations

import pytest

from mqchat import schema
from mqchat.errors import SchemaError


def test_valid_send_decodes() -> None:
    req = schema.decode_send(b'{"cmid": "a-1", "kind": "text", "body": "hi \xc3\xa9"}')
    assert req == schema.SendRequest(cmid="a-1", kind="text", body="hi é")


def test_limits_are_inclusive() -> None:
    body = "é" * schema.MAX_BODY_CHARS  # counted in characters, not bytes
    assert schema.decode_send(schema.encode(schema.SendRequest(cmid="c", kind="text", body=body))).body == body


@pytest.mark.parametrize(("raw", "code"), [
    (b"{" + b" " * schema.MAX_PAYLOAD_BYTES + b"}", "payload_too_large"),
    (b"", "malformed"),
    (b"null", "malformed"),
    (b'{"cmid": "c", "kind": "text"}', "malformed"),
    (b'{"cmid": "c", "kind": "text", "body": "x", "extra": 1}', "unknown_field"),
    (b'{"cmid": "c", "kind": "image", "body": "x"}', "unknown_kind"),
    (b'{"cmid": "", "kind": "text", "body": "x"}', "invalid_cmid"),
    (b'{"cmid": "' + b"c" * 65 + b'", "kind": "text", "body": "x"}', "invalid_cmid"),
    (b'{"cmid": "c", "kind": "text", "body": "x", "v": 9}', "unsupported_version"),
])
def test_rejections_carry_a_stable_code(raw: bytes, code: str) -> None:
    with pytest.raises(SchemaError) as info:
        schema.decode_send(raw)
    assert info.value.code == code
    assert info.value.message


def test_salvage_cmid_only_returns_trustworthy_values() -> None:
    assert schema.salvage_cmid(b'{"cmid": "ok-1", "kind": "bogus"}') == "ok-1"
    assert schema.salvage_cmid(b'{"cmid": "bad cmid"}') is None
    assert schema.salvage_cmid(b'{"cmid": 5}') is None
    assert schema.salvage_cmid(b"[1]") is None
    assert schema.salvage_cmid(b"garbage") is None


def test_outbound_payloads_carry_the_version_and_omit_empty_fields() -> None:
    ok = schema.encode(schema.Ack(cmid="c", channel="ch1", ok=True, id="5", seq=1, epoch=1))
    assert ok == b'{"cmid":"c","channel":"ch1","ok":true,"id":"5","seq":1,"epoch":1}'
    err = schema.decode_ack(schema.encode(
        schema.Ack(cmid=None, channel="ch1", ok=False, error=schema.ErrorBody("malformed", "bad"))))
    assert err.error == schema.ErrorBody("malformed", "bad")
    assert err.v == schema.VERSION

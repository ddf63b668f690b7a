from __future__ import annotations

import json

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
    (b'{"cmid": "c", "kind": "text"}', "missing_field"),
    (b'{"cmid": "c", "kind": "edit", "body": "x"}', "missing_field"),
    (b'{"cmid": "c", "kind": "reaction", "target": 1, "emoji": "\xf0\x9f\x91\x8d"}', "missing_field"),
    (b'{"cmid": "c", "kind": "text", "body": "x", "emoji": "\xf0\x9f\x91\x8d"}', "field_not_allowed"),
    (b'{"cmid": "c", "kind": "delete", "target": 1, "body": "x"}', "field_not_allowed"),
    (b'{"cmid": "c", "kind": "pin", "target": 0}', "invalid_target"),
    (b'{"cmid": "c", "kind": "text", "body": "x", "thread": -3}', "invalid_target"),
    (b'{"cmid": "c", "kind": "delete", "target": "5"}', "malformed"),
    (b'{"cmid": "c", "kind": "reaction", "target": 1, "emoji": "ok", "op": "add"}', "invalid_emoji"),
    (b'{"cmid": "c", "kind": "reaction", "target": 1, "emoji": ":Bad Code:", "op": "add"}', "invalid_emoji"),
    (b'{"cmid": "c", "kind": "reaction", "target": 1, "emoji": "\xf0\x9f\x91\x8d", "op": "toggle"}', "malformed"),
    (b'{"cmid": "c", "kind": "edit", "target": 1, "body": "' + b"x" * 4001 + b'"}', "body_too_long"),
    (b'{"cmid": "c", "kind": "text", "body": "x", "extra": 1}', "unknown_field"),
    (b'{"cmid": "c", "kind": "image", "body": "x"}', "unknown_kind"),
    (b'{"cmid": "", "kind": "text", "body": "x"}', "invalid_cmid"),
    (b'{"cmid": "' + b"c" * 65 + b'", "kind": "text", "body": "x"}', "invalid_cmid"),
    (b'{"cmid": "c", "kind": "text", "body": "x", "v": 9}', "unsupported_version"),
    (b'{"cmid": "c", "kind": "file", "body": "a caption"}', "missing_field"),
    (b'{"cmid": "c", "kind": "file", "upload": 7}', "malformed"),
    (b'{"cmid": "c", "kind": "file", "upload": "u1", "target": 1}', "field_not_allowed"),
    (b'{"cmid": "c", "kind": "text", "body": "x", "upload": "u1"}', "field_not_allowed"),
    (b'{"cmid": "c", "kind": "file", "upload": "u1", "caption": "x"}', "unknown_field"),
    (b'{"cmid": "c", "kind": "file", "upload": "u1", "body": "' + b"x" * 4001 + b'"}', "body_too_long"),
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
    assert ok == b'{"v":1,"cmid":"c","channel":"ch1","ok":true,"id":"5","seq":1,"epoch":1}'
    raw = schema.encode(schema.Ack(cmid=None, channel="ch1", ok=False, error=schema.ErrorBody("malformed", "bad")))
    assert json.loads(raw)["v"] == schema.VERSION
    err = schema.decode_ack(raw)
    assert err.error == schema.ErrorBody("malformed", "bad")


@pytest.mark.parametrize("body", ["", "   ", "\n\t"])
def test_an_empty_text_or_edit_is_refused(body: str) -> None:
    for payload in ({"cmid": "c1", "kind": "text", "body": body},
                    {"cmid": "c2", "kind": "edit", "target": 1, "body": body}):
        with pytest.raises(SchemaError) as refused:
            schema.decode_send(json.dumps(payload).encode())
        assert refused.value.code == "empty_body"


@pytest.mark.parametrize("emoji", ["👍", "👍🏽", "❤️", "🇫🇷", "👨‍👩‍👧", "1️⃣", ":party_parrot:", ":+1:"])
def test_reaction_emoji_formats(emoji: str) -> None:
    raw = schema.encode(schema.SendRequest(cmid="c", kind="reaction", target=3, emoji=emoji, op="add"))
    assert schema.decode_send(raw).emoji == emoji


@pytest.mark.parametrize("emoji", ["", "a", "👍 ", "👍" * 17, ":" + "a" * 33 + ":", "1", "<@u1>", "\u200d"])
def test_reaction_emoji_refusals(emoji: str) -> None:
    assert not schema.valid_emoji(emoji)


def test_every_kind_round_trips() -> None:
    for req in [
        schema.SendRequest(cmid="a", kind="text", body="hi", reply_to=2, thread=1),
        schema.SendRequest(cmid="b", kind="edit", target=1, body="new"),
        schema.SendRequest(cmid="c", kind="delete", target=1),
        schema.SendRequest(cmid="d", kind="reaction", target=1, emoji="🎉", op="remove"),
        schema.SendRequest(cmid="e", kind="pin", target=1),
        schema.SendRequest(cmid="f", kind="unpin", target=1),
        schema.SendRequest(cmid="g", kind="file", upload="u1"),
        schema.SendRequest(cmid="h", kind="file", upload="u1", body="a caption", reply_to=2, thread=1),
    ]:
        assert schema.decode_send(schema.encode(req)) == req


def test_a_file_message_counts_and_carries_its_attachment() -> None:
    assert "file" in schema.COUNTING_KINDS
    assert "file" in schema.FILE_KINDS
    att = schema.Attachment(id="u1", filename="a.png", content_type="image/png", size=3, url="/x", url_expires=9,
                            width=2, height=1)
    msg = schema.ChannelMessage(id="1", seq=1, epoch=1, channel="c", sender="s", device="d", cmid="m", ts=5,
                                kind="file", body="", attachment=att)
    wire = json.loads(schema.encode(msg))
    assert wire["attachment"] == {"id": "u1", "filename": "a.png", "content_type": "image/png", "size": 3,
                                  "url": "/x", "url_expires": 9, "width": 2, "height": 1}
    assert schema.decode_channel_message(schema.encode(msg)) == msg

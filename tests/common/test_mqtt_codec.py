"""mqchat.mqtt.codec on its own: framing under any chunking, client packets decoded by the strict
server-side decoders, server packets decoded by the client-side ones, and the lenient mode's limits.

The strict decoders' refusals are exercised byte by byte against the running broker in
tests/broker/test_hostile.py; here each direction is checked as a round trip.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqchat.mqtt import codec
from mqchat.mqtt.codec import ProtocolError, Publish

topics_st = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00+#"), min_size=1,
                    max_size=40)
publish_st = st.builds(Publish, topic=topics_st, payload=st.binary(max_size=400), qos=st.sampled_from([0, 1, 2]),
                       retain=st.booleans(), dup=st.booleans(), packet_id=st.integers(1, 0xFFFF))


def encode(p: Publish) -> bytes:
    return codec.encode_publish(codec.encode_topic(p.topic), p.payload, p.qos, p.retain, p.packet_id, p.dup)


@given(st.integers(0, codec.MAX_REMAINING_LENGTH))
def test_remaining_length_round_trips(n: int) -> None:
    encoded = codec.encode_remaining_length(n)
    assert 1 <= len(encoded) <= 4
    packets, used = codec.split_packets(bytes([0x30]) + encoded)
    # Only the header is there: nothing complete unless the body is empty.
    assert (packets, used) == (([(0x30, b"")], 1 + len(encoded)) if n == 0 else ([], 0))


@pytest.mark.parametrize("n", [-1, codec.MAX_REMAINING_LENGTH + 1])
def test_remaining_length_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        codec.encode_remaining_length(n)


@given(st.lists(publish_st, min_size=1, max_size=8), st.data())
def test_frames_reassemble_under_any_chunking(publishes: list[Publish], data: st.DataObject) -> None:
    wire = b"".join(encode(p) for p in publishes)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    reader = codec.FrameReader()
    got: list[Publish] = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += [codec.decode_publish(first, body, strict=False) for first, body in reader.feed(wire[a:b])]
    assert reader.buffered == 0
    assert got == [Publish(p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id if p.qos else 0)
                   for p in publishes]


@given(publish_st)
def test_strict_and_lenient_publish_decoding_agree_on_valid_packets(p: Publish) -> None:
    if p.dup and p.qos == 0:
        p.dup = False  # [MQTT-3.3.1-2]: only the lenient decoder takes it
    ((first, body),), _ = codec.split_packets(encode(p))
    assert codec.decode_publish(first & 0x0F, body) == codec.decode_publish(first, body, strict=False)


@pytest.mark.parametrize(("topic", "qos", "packet_id", "dup"), [
    ("a/+", 0, 0, False), ("a/#", 1, 5, False), ("", 0, 0, False), ("a/\x00", 0, 0, False),
    ("a/b", 1, 0, False), ("a/b", 0, 0, True)])
def test_only_the_strict_decoder_refuses_what_a_server_must(topic: str, qos: int, packet_id: int,
                                                            dup: bool) -> None:
    ((first, body),), _ = codec.split_packets(
        codec.encode_publish(codec.encode_topic(topic), b"x", qos, False, packet_id, dup))
    with pytest.raises(ProtocolError):
        codec.decode_publish(first & 0x0F, body)
    assert codec.decode_publish(first, body, strict=False).topic == topic


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("wire", [b"\x36\x05\x00\x01ax\x00", b"\x30\x01\x00", b"\x32\x04\x00\x10ab",
                                  b"\x32\x03\x00\x01a", b"\x30\x04\x00\x02\xff\xfe"])
def test_both_decoders_refuse_a_malformed_publish(wire: bytes, strict: bool) -> None:
    ((first, body),), _ = codec.split_packets(wire)
    with pytest.raises(ProtocolError):
        codec.decode_publish(first & 0x0F, body, strict=strict)


def test_a_five_byte_length_and_an_oversized_packet_are_refused_at_the_header() -> None:
    with pytest.raises(ProtocolError, match="longer than four bytes"):
        codec.split_packets(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
    with pytest.raises(ProtocolError, match="over the limit of 100"):
        codec.FrameReader(100).feed(b"\x30" + codec.encode_remaining_length(99))  # 101 bytes with its header
    assert codec.FrameReader(100).feed(b"\x30" + codec.encode_remaining_length(98)) == []


def test_connect_bytes_and_the_server_reading_them() -> None:
    wire = codec.encode_connect("c1", username="u", password="p", keepalive=30, will=("w", b"x", 1, True))
    # flags: user 0x80 | password 0x40 | will retain 0x20 | will QoS 1 0x08 | will 0x04 | clean 0x02
    assert wire == (b"\x10\x1a\x00\x04MQTT\x04\xee\x00\x1e" + b"\x00\x02c1" + b"\x00\x01w\x00\x01x"
                    + b"\x00\x01u\x00\x01p")
    ((first, body),), _ = codec.split_packets(wire)
    assert codec.decode_connect(first & 0x0F, body) == codec.Connect(
        client_id="c1", clean_session=True, keep_alive=30, username="u", password="p", will_topic="w",
        will_message=b"x", will_qos=1, will_retain=True, protocol_name="MQTT", protocol_level=4)


@pytest.mark.parametrize("kwargs", [{"keepalive": 70_000}, {"will": ("w", b"x", 3, False)}])
def test_connect_with_values_the_wire_cannot_carry_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # the message names the field; any of them
        codec.encode_connect("c", **kwargs)  # type: ignore[arg-type]


def test_subscribe_and_unsubscribe_read_back_by_the_server() -> None:
    ((first, body),), _ = codec.split_packets(codec.encode_subscribe(7, [("a/+", 1), ("b/#", 2)]))
    assert codec.decode_subscribe(first & 0x0F, body) == (7, [("a/+", 1), ("b/#", 2)])
    ((first, body),), _ = codec.split_packets(codec.encode_unsubscribe(8, ["a/+"]))
    assert codec.decode_unsubscribe(first & 0x0F, body) == (8, ["a/+"])


@pytest.mark.parametrize(("call", "match"), [
    (lambda: codec.encode_subscribe(0, [("a", 0)]), "packet id 0"),
    (lambda: codec.encode_subscribe(1, [("a", 3)]), "requested QoS 3"),
    (lambda: codec.encode_subscribe(1, []), "at least one filter"),
    (lambda: codec.encode_unsubscribe(1, []), "at least one filter"),
    (lambda: codec.encode_string("x" * 70_000), "65535"),
])
def test_client_encoders_refuse_bad_input(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(("present", "code", "expected"), [(True, 0, (True, 0)), (True, 5, (False, 5)),
                                                           (False, 0, (False, 0))])
def test_connack_read_back_by_the_client(present: bool, code: int, expected: tuple[bool, int]) -> None:
    ((first, body),), _ = codec.split_packets(codec.encode_connack(present, code))
    assert codec.decode_connack(first & 0x0F, body) == expected


@pytest.mark.parametrize("wire", [b"\x21\x02\x00\x00", b"\x20\x03\x00\x00\x00", b"\x20\x02\x02\x00"])
def test_a_malformed_connack_is_refused(wire: bytes) -> None:
    ((first, body),), _ = codec.split_packets(wire)
    with pytest.raises(ProtocolError):
        codec.decode_connack(first & 0x0F, body)


def test_suback_and_acks_read_back_by_the_client() -> None:
    ((first, body),), _ = codec.split_packets(codec.encode_suback(300, [0, 2, codec.SUBACK_FAILURE]))
    assert codec.decode_suback(first & 0x0F, body) == (300, [0, 2, 0x80])
    with pytest.raises(ProtocolError, match="return code 0x03"):
        codec.decode_suback(0, b"\x00\x01\x03")
    for kind in (codec.PUBACK, codec.PUBREC, codec.PUBREL, codec.PUBCOMP, codec.UNSUBACK):
        ((first, body),), _ = codec.split_packets(codec.encode_ack(kind, 513))
        assert first >> 4 == kind
        required = 0x02 if kind == codec.PUBREL else 0
        assert codec.decode_packet_id(codec.PACKET_NAMES[kind], first & 0x0F, body, required_flags=required) == 513


def test_empty_packets() -> None:
    for wire, kind in ((codec.PINGREQ_BYTES, codec.PINGREQ), (codec.PINGRESP_BYTES, codec.PINGRESP),
                       (codec.DISCONNECT_BYTES, codec.DISCONNECT)):
        ((first, body),), _ = codec.split_packets(wire)
        assert first >> 4 == kind
        codec.check_empty(codec.PACKET_NAMES[kind], first & 0x0F, body)

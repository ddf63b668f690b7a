"""mobile_sim.mqtt: the client against a scripted server (split and coalesced reads, keep-alive,
refused CONNECT), and against real brokers (Mosquitto and ``mqchat broker --no-auth``): connect,
subscribe, QoS 0/1/2 publish, will on abort. Its codec is tested in tests/common/test_mqtt_codec.py."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from harness.processes import NotInstalled
from mobile_sim.mqtt import ConnectionLost, ConnectRefused, Message, MqttClient
from mqchat.mqtt import codec
from tests.conftest import ROOT, Mosquitto, free_port, wait_for_port
from tests.waiting import wait_for

# ---------------------------------------------------------------------------- scripted server

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next packet the client sent: fed to the codec's framing a byte at a time, so nothing of
    the packet after it is consumed (the client's packets here are small)."""
    frames = codec.FrameReader()
    while not (packets := frames.feed(await reader.readexactly(1))):
        pass
    return packets[0]


async def serve(script: Script) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    first, body = await read_packet(reader)
    assert first >> 4 == codec.CONNECT
    writer.write(codec.encode_connack(False, codec.ACCEPTED))
    return body


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    return codec.encode_publish(codec.encode_topic(topic), payload, qos, False, packet_id)


def puback_for(first: int, body: bytes) -> bytes:
    """The PUBACK a server owes for the client's QoS 1 PUBLISH."""
    return codec.encode_ack(codec.PUBACK, codec.decode_publish(first & 0x0F, body).packet_id)


async def test_many_packets_in_one_read_and_one_packet_across_reads() -> None:
    burst = b"".join(publish("t/burst", str(i).encode(), qos=1, packet_id=i + 1) for i in range(50))
    big = publish("t/big", b"x" * 5000, qos=1, packet_id=999)
    acks: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        writer.write(burst)
        for i in range(0, len(big), 7):  # the 5 kB packet in 7-byte writes, and a header split too
            writer.write(big[i : i + 7])
            await writer.drain()
            if i < 30:  # time between writes, so the client really gets the header in pieces
                await asyncio.sleep(0.01)
        while len(acks) < 51:
            first, body = await read_packet(reader)
            assert first >> 4 == codec.PUBACK
            acks.append(codec.decode_packet_id("PUBACK", first & 0x0F, body))

    server, port = await serve(script)
    got: list[Message] = []
    async with server:
        client = MqttClient(client_id="split", on_message=got.append)
        assert await client.connect("127.0.0.1", port) is False
        await wait_for(lambda: len(acks) == 51, 5, what="51 PUBACKs")
    assert [m.payload for m in got[:50]] == [str(i).encode() for i in range(50)]
    assert got[50] == Message("t/big", b"x" * 5000, 1, False, False)
    assert acks == [*range(1, 51), 999]
    client.abort()


def test_works_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    pings = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pings
        await accept(reader, writer)
        writer.write(publish("t/in", b"a", qos=1, packet_id=7) + publish("t/in", b"b"))
        while True:
            first, body = await read_packet(reader)
            if first >> 4 == codec.PUBLISH:
                writer.write(puback_for(first, body))
            elif first >> 4 == codec.PINGREQ:
                pings += 1
                writer.write(codec.PINGRESP_BYTES)

    async def scenario() -> list[Message]:
        server, port = await serve(script)
        got: list[Message] = []
        async with server:
            client = MqttClient(client_id="uv", keepalive=1, on_message=got.append)
            await client.connect("127.0.0.1", port)
            await client.publish("t/out", b"x", qos=1)
            # a second ping is only sent if the first one's PINGRESP was taken (else: connection lost)
            await wait_for(lambda: pings == 2, 5, what="a second keep-alive ping")
            assert client.connected
            await client.disconnect()
        return got

    got = uvloop.run(scenario())
    assert [(m.payload, m.qos) for m in got] == [(b"a", 1), (b"b", 0)]


async def test_a_batch_goes_out_in_one_write() -> None:
    reads: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        while chunk := await reader.read(65536):
            reads.append(chunk)
            packets, _ = codec.split_packets(chunk)
            writer.write(b"".join(puback_for(first, body) for first, body in packets))

    server, port = await serve(script)
    async with server:
        client = MqttClient(client_id="batch")
        await client.connect("127.0.0.1", port)
        with client.batch():
            futures = [client.publish_nowait("t", bytes([i]), qos=1) for i in range(100)]
            await asyncio.sleep(0.05)  # time for a write to arrive, had one been made: none must be
            assert not reads  # nothing written before the block ends
        await asyncio.wait_for(asyncio.gather(*[f for f in futures if f is not None]), 5)
        assert len(reads) == 1
        await client.disconnect()


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
async def test_refused_connect_raises_with_the_code(code: int) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(codec.encode_connack(False, code))
        await reader.read()

    server, port = await serve(script)
    async with server:
        client = MqttClient(client_id="refused")
        with pytest.raises(ConnectRefused) as info:
            await client.connect("127.0.0.1", port)
        assert info.value.code == code
        assert isinstance(await asyncio.wait_for(client.closed, 5), ConnectionLost)


async def test_connect_times_out_without_connack() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server, port = await serve(script)
    async with server:
        with pytest.raises(TimeoutError):
            await MqttClient(client_id="silent").connect("127.0.0.1", port, timeout=0.3)


async def test_keepalive_pings_and_a_missing_pingresp_loses_the_connection() -> None:
    pings: list[float] = []
    answer = 2

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answer
        body = await accept(reader, writer)
        assert body[8:10] == (1).to_bytes(2, "big")  # keep-alive field
        while True:
            first, _ = await read_packet(reader)
            assert first >> 4 == codec.PINGREQ
            pings.append(time.monotonic())
            if answer:
                answer -= 1
                writer.write(codec.PINGRESP_BYTES)

    server, port = await serve(script)
    async with server:
        client = MqttClient(client_id="pinger", keepalive=1)
        start = time.monotonic()
        await client.connect("127.0.0.1", port)
        reason = await asyncio.wait_for(client.closed, 10)
    assert isinstance(reason, ConnectionLost)
    assert "PINGRESP" in str(reason)
    assert len(pings) == 3  # two answered, the third not: lost one keep-alive later
    assert 0.8 < pings[0] - start < 1.5
    assert 3.8 < time.monotonic() - start < 5.5


async def test_pending_publishes_fail_when_the_connection_drops() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        await read_packet(reader)  # the PUBLISH: never acked, the connection is dropped instead
        writer.transport.abort()

    server, port = await serve(script)
    async with server:
        client = MqttClient(client_id="dropped")
        await client.connect("127.0.0.1", port)
        with pytest.raises(ConnectionLost):
            await client.publish("t", b"x", qos=1)
        assert isinstance(await client.closed, ConnectionLost)
        with pytest.raises(ConnectionLost):
            client.publish_nowait("t", b"x", qos=1)


async def test_packet_ids_wrap_and_skip_those_in_use() -> None:
    client = MqttClient(client_id="ids")
    client._transport = object()  # type: ignore[assignment]  # only _new_pending's "connected" check reads it
    client._loop = asyncio.get_running_loop()
    held, _ = client._new_pending()
    assert held == 1
    for expected in range(2, 0x10000):
        packet_id, fut = client._new_pending()
        assert packet_id == expected
        client._resolve(packet_id, None)
    assert fut.done()
    assert client._new_pending()[0] == 2  # 65535 wraps to 1, which is still in use


# ------------------------------------------------------------------------------- real brokers


def _mqchat_broker(workdir: Path) -> Iterator[int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(workdir), "MQCHAT_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "mqchat.cli", "broker", "--port", str(port), "--no-auth"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "mqchat broker", within=30)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module", params=["mosquitto", "mqchat"])
def broker_port(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir = tmp_path_factory.mktemp(request.param)
    if request.param == "mqchat":
        yield from _mqchat_broker(workdir)
        return
    try:
        broker = Mosquitto(workdir).start()
    except NotInstalled as exc:
        pytest.skip(str(exc))
    yield broker.port
    broker.kill()


@pytest.fixture
def topic() -> str:
    return f"test/{secrets.token_hex(4)}"


@pytest.fixture
async def connected(broker_port: int) -> AsyncIterator[Callable[..., Awaitable[MqttClient]]]:
    clients: list[MqttClient] = []

    async def make(**kw: object) -> MqttClient:
        kw.setdefault("client_id", f"c-{secrets.token_hex(4)}")
        client = MqttClient(**kw)  # type: ignore[arg-type]
        await client.connect("127.0.0.1", broker_port)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.disconnect()


@pytest.mark.e2e
async def test_publish_and_receive_qos0_and_qos1(connected: Callable[..., Awaitable[MqttClient]], topic: str) -> None:
    got: list[Message] = []
    sub = await connected(on_message=got.append)
    assert await sub.subscribe((f"{topic}/+", 1), (f"{topic}/zero", 0)) == [1, 0]
    pub = await connected()
    await pub.publish(f"{topic}/a", b"one", qos=1)
    await pub.publish(f"{topic}/a", b"zero", qos=0)
    futures = [pub.publish_nowait(f"{topic}/b", str(i).encode(), qos=1) for i in range(200)]
    await asyncio.gather(*[f for f in futures if f is not None])
    await wait_for(lambda: len(got) == 202)
    assert got[0] == Message(f"{topic}/a", b"one", 1, False, False)
    assert got[1].payload == b"zero"
    assert got[1].qos == 0  # min(published, granted) [MQTT 3.1.1 §3.8.4]; plain amqtt 0.12.1 sends it at QoS 1
    assert [m.payload for m in got[2:]] == [str(i).encode() for i in range(200)]
    await sub.unsubscribe(f"{topic}/+")
    await pub.publish(f"{topic}/a", b"after", qos=1)
    await pub.publish(f"{topic}/zero", b"still", qos=1)
    await wait_for(lambda: len(got) == 203)
    assert got[-1].payload == b"still"


@pytest.mark.e2e
async def test_will_is_published_on_abort_not_on_disconnect(connected: Callable[..., Awaitable[MqttClient]],
                                                            topic: str) -> None:
    got: list[Message] = []
    watcher = await connected(on_message=got.append)
    await watcher.subscribe((f"{topic}/will/#", 1))
    polite = await connected(will=(f"{topic}/will/polite", b"gone", 1, False))
    await polite.disconnect()
    assert await polite.closed is None
    lost = await connected(will=(f"{topic}/will/lost", b"gone", 1, False))
    lost.abort()
    assert isinstance(await lost.closed, ConnectionLost)
    await wait_for(lambda: len(got) == 1)
    await asyncio.sleep(0.2)  # a window for a wrong will (the polite client's) to arrive too: none must
    assert [(m.topic, m.payload) for m in got] == [(f"{topic}/will/lost", b"gone")]


@pytest.mark.e2e
async def test_reconnect_after_disconnect(broker_port: int, topic: str) -> None:
    got: list[Message] = []
    client = MqttClient(client_id=f"c-{secrets.token_hex(4)}", on_message=got.append)
    await client.connect("127.0.0.1", broker_port)
    await client.disconnect()
    assert not client.connected
    assert await client.connect("127.0.0.1", broker_port) is False
    assert client.connected
    await client.subscribe((topic, 1))
    await client.publish(topic, b"again", qos=1)
    await wait_for(lambda: len(got) == 1)
    await client.disconnect()


@pytest.mark.e2e
async def test_qos2_both_ways(connected: Callable[..., Awaitable[MqttClient]], topic: str) -> None:
    got: list[Message] = []
    sub = await connected(on_message=got.append)
    assert await sub.subscribe((topic, 2)) == [2]
    pub = await connected()
    for i in range(20):
        await pub.publish(topic, str(i).encode(), qos=2)  # returns on PUBCOMP
    await wait_for(lambda: len(got) == 20)
    await asyncio.sleep(0.1)  # a window for a duplicate to arrive: none must (QoS 2 is exactly once)
    assert [(m.payload, m.qos) for m in got] == [(str(i).encode(), 2) for i in range(20)]
    assert not pub._pending
    assert not pub._qos2_out
    await wait_for(lambda: not sub._qos2_in)  # every PUBREL answered


@pytest.mark.e2e
async def test_empty_client_id_without_clean_session_is_refused(broker_port: int) -> None:
    client = MqttClient(client_id="", clean_session=False)
    with pytest.raises(ConnectRefused) as info:
        await client.connect("127.0.0.1", broker_port)
    assert info.value.code == 2  # identifier rejected [MQTT-3.1.3-8]


@pytest.mark.e2e
async def test_keepalive_pings_keep_a_quiet_connection_open(broker_port: int) -> None:
    client = MqttClient(client_id=f"c-{secrets.token_hex(4)}", keepalive=1)
    await client.connect("127.0.0.1", broker_port)
    await asyncio.sleep(2.6)  # two pings answered; a broker drops a silent client after 1.5 s
    assert client.connected
    assert not client.closed.done()
    await client.disconnect()

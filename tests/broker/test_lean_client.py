"""The services' lean MQTT client (:mod:`mqchat.mqtt.client`) against our embedded broker and
Mosquitto on free ports, and against a scripted server socket for what no real broker does."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from harness.mosquitto import Mosquitto, mosquitto_binary
from harness.ports import free_port
from harness.processes import spawn, wait_port
from mqchat import tls
from mqchat.mqtt import codec
from mqchat.mqtt.client import (
    BrokerProtocolError,
    Client,
    ConnectionLost,
    ConnectRefused,
    Message,
    SubscribeRefused,
    Will,
)
from tests.broker.conftest import StartBroker
from tests.broker.launch import BrokerProcess, start_broker
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

_ids = itertools.count()
BROKERS = ["mqchat", "mosquitto"]


def uid(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """Port of a bare (anonymous) broker per kind, shared by the module; started on first use."""
    ports: dict[str, int] = {}
    ours: BrokerProcess | None = None
    mosq: Mosquitto | None = None
    try:
        ours = start_broker("mqchat", tmp_path_factory.mktemp("ours"))
        ports["mqchat"] = ours.port
        if mosquitto_binary() is not None:
            mosq = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
            ports["mosquitto"] = mosq.port
        yield ports
    finally:
        if ours is not None:
            ours.kill()
        if mosq is not None:
            mosq.kill()


@pytest.fixture(params=BROKERS)
def port(request: pytest.FixtureRequest, brokers: dict[str, int]) -> int:
    if request.param not in brokers:
        pytest.skip(f"{request.param} is not installed")
    return brokers[request.param]


async def next_message(client: Client, within: float = 10.0) -> Message:
    async with asyncio.timeout(within):
        return await anext(aiter(client.messages))


# -- against real brokers -----------------------------------------------------------------------


async def test_qos1_round_trip_and_order(port: int) -> None:
    topic = uid("t/round/")
    async with (Client("127.0.0.1", port, client_id=uid("sub")) as sub,
                Client("127.0.0.1", port, client_id=uid("pub"), max_inflight=10) as pub):
        assert await sub.subscribe((topic, 1)) == [1]
        payloads = [f"m{i}".encode() for i in range(500)]
        await pub.publish_many([(topic, p) for p in payloads])  # 500 through a window of 10
        got: list[bytes] = []
        async with asyncio.timeout(20):
            async for message in sub.messages:
                assert (message.topic, message.qos) == (topic, 1)
                got.append(message.payload)
                if len(got) == len(payloads):
                    break
        assert got == payloads
        await pub.publish(topic, b"qos0")
        assert (await next_message(sub)).payload == b"qos0"


async def test_shared_subscription_splits_messages(port: int) -> None:
    group, topic = uid("g"), uid("t/shared/")
    async with (Client("127.0.0.1", port, client_id=uid("a")) as a, Client("127.0.0.1", port, client_id=uid("b")) as b,
                Client("127.0.0.1", port, client_id=uid("pub")) as pub):
        for c in (a, b):
            await c.subscribe((f"$share/{group}/{topic}/+", 1))
        await pub.publish_many([(f"{topic}/{i}", b"x") for i in range(40)])
        counts = {"a": 0, "b": 0}

        async def drain(name: str, c: Client) -> None:
            async for _ in c.messages:
                counts[name] += 1

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(drain("a", a)), tg.create_task(drain("b", b))]
            await wait_for(lambda: counts["a"] + counts["b"] == 40, what="40 shared deliveries")
            for t in tasks:
                t.cancel()
        assert counts["a"] + counts["b"] == 40, "each message reaches one member of the group"


async def test_unsubscribe_stops_delivery(port: int) -> None:
    topic = uid("t/unsub/")
    async with Client("127.0.0.1", port, client_id=uid("c")) as c:
        await c.subscribe((topic, 1), (topic + "/marker", 1))
        await c.unsubscribe(topic)
        await c.publish(topic, b"after", qos=1)
        await c.publish(topic + "/marker", b"marker", qos=1)
        assert (await next_message(c)).payload == b"marker", "nothing arrives on the unsubscribed topic"


async def test_will_is_delivered_when_the_socket_is_killed(port: int) -> None:
    will_topic = uid("t/will/")
    async with Client("127.0.0.1", port, client_id=uid("watch")) as watch:
        await watch.subscribe((will_topic, 1))
        dying = Client("127.0.0.1", port, client_id=uid("dying"), will=Will(will_topic, b"gone", qos=1))
        await dying.connect()
        dying.abort()
        assert isinstance(await dying.closed, ConnectionLost)
        assert (await next_message(watch)).payload == b"gone"
        # ... and not on a clean DISCONNECT
        polite = Client("127.0.0.1", port, client_id=uid("polite"), will=Will(will_topic, b"polite", qos=1))
        await polite.connect()
        await polite.disconnect()
        assert await polite.closed is None
        await watch.publish(will_topic, b"marker", qos=1)
        assert (await next_message(watch)).payload == b"marker"


async def test_reconnect_by_the_caller(port: int) -> None:
    topic = uid("t/again/")
    c = Client("127.0.0.1", port, client_id=uid("again"))
    await c.connect()
    c.abort()
    await c.closed
    assert not c.connected
    with pytest.raises(ConnectionLost):
        await c.publish(topic, b"lost", qos=1)
    assert await c.connect() is False  # clean session: nothing kept
    await c.subscribe((topic, 1))
    await c.publish(topic, b"back", qos=1)
    assert (await next_message(c)).payload == b"back"
    await c.disconnect()


async def test_keepalive_pings_keep_an_idle_connection(port: int) -> None:
    async with Client("127.0.0.1", port, client_id=uid("idle"), keepalive=1) as c:
        await c.subscribe((uid("t/idle/"), 0))
        for _ in range(3):  # three keep-alive intervals: the broker would drop us at 1.5 without pings
            await asyncio.sleep(1)
            assert c.connected
        assert not c.closed.done()


async def test_manual_ack_holds_the_puback_until_acked(brokers: dict[str, int]) -> None:
    """A persistent session gets an unacknowledged message again after a reconnect; an acked one not."""
    port = brokers["mqchat"]
    topic, cid = uid("t/manual/"), uid("manual")
    async with Client("127.0.0.1", port, client_id=uid("pub")) as pub:
        c = Client("127.0.0.1", port, client_id=cid, clean_session=False, manual_ack=True)
        await c.connect()
        await c.subscribe((topic, 1))
        await pub.publish(topic, b"one", qos=1)
        first = await next_message(c)
        assert first.payload == b"one"
        c.abort()  # never acknowledged
        await c.closed
        assert await c.connect() is True
        again = await next_message(c)
        assert (again.payload, again.dup) == (b"one", True)
        c.ack(again)
        c.ack(again)  # idempotent
        await c.disconnect()
        await c.connect()
        await pub.publish(topic, b"two", qos=1)
        assert (await next_message(c)).payload == b"two", "the acked message is not redelivered"
        await c.disconnect()


@pytest.fixture
def auth_broker(start_broker: StartBroker) -> BrokerProcess:
    return start_broker("mqchat", auth=True)


@pytest.fixture
def tls_broker(start_broker: StartBroker, tmp_path: Path) -> tuple[BrokerProcess, Path, int]:
    cert, key = tls.dev_pair(tmp_path / "tls")
    tls_port = free_port()
    broker = start_broker("mqchat", auth=True, env={
        "MQCHAT_BROKER__TLS_PORT": str(tls_port), "MQCHAT_BROKER__TLS_CERT_FILE": str(cert),
        "MQCHAT_BROKER__TLS_KEY_FILE": str(key)})
    return broker, cert, tls_port


async def test_connect_refused_codes_of_our_broker(auth_broker: BrokerProcess) -> None:
    broker = auth_broker
    bad = Client("127.0.0.1", broker.port, client_id="ualice:phone", username="ualice", password="not-a-token")
    with pytest.raises(ConnectRefused) as refused:
        await bad.connect()
    assert refused.value.code in (codec.REFUSED_BAD_CREDENTIALS, codec.REFUSED_NOT_AUTHORIZED)
    assert not bad.connected
    good = Client("127.0.0.1", broker.port, client_id="ualice:phone", username="ualice",
                  password=broker.token("ualice", "phone"))
    async with good:
        with pytest.raises(SubscribeRefused) as sub:
            await good.subscribe(("user/ualice/events", 1), ("user/someone-else/events", 1))
        assert sub.value.filters == ["user/someone-else/events"]


async def test_connect_refused_by_mosquitto(tmp_path: Path) -> None:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n")
    proc = spawn([binary, "-c", str(conf)], log=tmp_path / "mosquitto.log")
    try:
        wait_port(port, proc, "mosquitto")
        with pytest.raises(ConnectRefused) as refused:
            await Client("127.0.0.1", port, client_id="anon").connect()
        assert refused.value.code == codec.REFUSED_NOT_AUTHORIZED
    finally:
        proc.kill()
        proc.wait(10)


async def test_tls(tls_broker: tuple[BrokerProcess, Path, int]) -> None:
    broker, cert, tls_port = tls_broker
    context = ssl.create_default_context(cafile=str(cert))
    async with Client("127.0.0.1", tls_port, client_id="ualice:phone", username="ualice",
                      password=broker.token("ualice", "phone"), ssl=context) as c:
        await c.subscribe(("user/ualice/events", 1))
    untrusted = Client("127.0.0.1", tls_port, client_id="ualice:phone", ssl=ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        await untrusted.connect()


async def test_nothing_listening_is_an_os_error() -> None:
    with pytest.raises(ConnectionRefusedError):
        await Client("127.0.0.1", free_port(), client_id="x").connect()


# -- against a scripted server socket -----------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[int]:
    """A TCP server on a free port that runs ``script`` for each connection; every connection is
    closed and every script cancelled on exit."""
    running: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            await script(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()
            running.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(running):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*running, return_exceptions=True)
        await server.wait_closed()


async def read_packets(reader: asyncio.StreamReader, frames: codec.FrameReader) -> list[tuple[int, bytes]]:
    data = await reader.read(65536)
    if not data:
        raise ConnectionResetError
    return frames.feed(data)


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> codec.FrameReader:
    """Read the CONNECT and answer CONNACK accepted."""
    frames = codec.FrameReader()
    packets = await read_packets(reader, frames)
    assert packets[0][0] >> 4 == codec.CONNECT
    writer.write(codec.encode_connack(False, codec.ACCEPTED))
    return frames


BAD_PACKETS = [
    pytest.param(b"\x20\x02\x00\x00", "a second CONNACK", id="second-connack"),
    pytest.param(b"\x30\xff\xff\xff\xff\x7f", "longer than four bytes", id="remaining-length"),
    pytest.param(b"\x36\x05\x00\x01ax\x00", "QoS 3", id="publish-qos3"),
    pytest.param(b"\x34\x05\x00\x01ax\x00", "QoS 2 PUBLISH", id="publish-qos2"),
    pytest.param(b"\x32\x05\x00\x01a\x00\x00", "packet identifier 0", id="publish-id-0"),
    pytest.param(b"\x32\x02\x00\x09", "truncated", id="publish-truncated"),
    pytest.param(b"\x90\x03\x00\x01\x03", "SUBACK return code", id="suback-code"),
    pytest.param(b"\x40\x03\x00\x01\x00", "2 bytes long", id="puback-length"),
    pytest.param(b"\x10\x00", "unexpected CONNECT", id="connect-from-server"),
    pytest.param(b"\xf0\x00", "unexpected", id="reserved-type"),
    pytest.param(b"\xd0\x01\x00", "no body", id="pingresp-body"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_PACKETS)
async def test_bad_packets_from_the_server_are_a_clear_error(bad: bytes, reason: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        await read_packets(reader, codec.FrameReader())  # the PUBLISH in flight
        writer.write(bad)
        with contextlib.suppress(ConnectionError):
            await reader.read()

    async with scripted(script) as port:
        c = Client("127.0.0.1", port, client_id="c")
        await c.connect()
        with pytest.raises(BrokerProtocolError, match=reason) as caught:
            await c.publish("t", b"x", qos=1)
        assert await c.closed is caught.value, "the connection was closed, for that reason"
        with pytest.raises(BrokerProtocolError):
            await anext(aiter(c.messages))


@pytest.mark.parametrize(("answer", "error", "match"), [
    (b"\x30\x03\x00\x01a", BrokerProtocolError, "PUBLISH before CONNACK"),
    (b"\x20\x02\x02\x00", BrokerProtocolError, "reserved acknowledge flags"),
    (b"\x20\x03\x00\x00\x00", BrokerProtocolError, "2 bytes long"),
    (b"\x20\x02\x00\x02", ConnectRefused, "identifier rejected"),
    (b"", ConnectionLost, "closed by the broker"),
])
async def test_bad_connack(answer: bytes, error: type[Exception], match: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with scripted(script) as port:
        with pytest.raises(error, match=match):
            await Client("127.0.0.1", port, client_id="c").connect()


async def test_silent_server_times_out_the_connect() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with scripted(script) as port:
        with pytest.raises(TimeoutError):
            await Client("127.0.0.1", port, client_id="c", connect_timeout=0.3).connect()


async def test_window_and_pipelining() -> None:
    """max_inflight publishes go out at once (in one write), then one more per PUBACK."""
    seen: list[int] = []
    reads: list[int] = []
    release: asyncio.Queue[int] = asyncio.Queue()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = await accept(reader, writer)

        async def acks() -> None:
            while True:
                writer.write(codec.encode_ack(codec.PUBACK, await release.get()))

        task = asyncio.create_task(acks())
        try:
            while True:
                packets = await read_packets(reader, frames)
                reads.append(len(packets))
                seen.extend(codec.decode_publish(f & 0x0F, b).packet_id for f, b in packets)
        except ConnectionError:
            pass
        finally:
            task.cancel()

    async with scripted(script) as port:
        c = Client("127.0.0.1", port, client_id="c", max_inflight=50)
        await c.connect()
        sending = asyncio.create_task(c.publish_many([("t", b"x" * 20)] * 80))
        await wait_for(lambda: len(seen) == 50, what="the first 50 publishes")
        assert reads[0] == 50 or len(reads) <= 3, f"pipelined into few writes, got reads of {reads}"
        await asyncio.sleep(0.2)  # the window is full: nothing more may come however long we wait
        assert len(seen) == 50
        for packet_id in seen[:10]:
            release.put_nowait(packet_id)
        await wait_for(lambda: len(seen) == 60, what="10 more after 10 PUBACKs")
        assert not sending.done()
        for packet_id in seen[10:]:
            release.put_nowait(packet_id)
        await wait_for(lambda: len(seen) == 80, what="the rest")
        for packet_id in seen[60:]:
            release.put_nowait(packet_id)
        async with asyncio.timeout(5):
            await sending
        assert len(set(seen[-50:])) == 50, "packet ids in flight are distinct"
        await c.disconnect()


async def test_connection_lost_fails_every_pending_publish() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        await reader.read(65536)
        writer.transport.abort()

    async with scripted(script) as port:
        c = Client("127.0.0.1", port, client_id="c")
        await c.connect()
        results = await asyncio.gather(c.publish_many([("t", b"1"), ("t", b"2")]), c.publish("t", b"3", qos=1),
                                       return_exceptions=True)
        assert all(isinstance(r, ConnectionLost) for r in results), results
        assert not c.connected


async def test_keepalive_timeout_without_pingresp() -> None:
    pings = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pings
        frames = await accept(reader, writer)
        with contextlib.suppress(ConnectionError):
            while True:
                pings += sum(1 for f, _ in await read_packets(reader, frames) if f >> 4 == codec.PINGREQ)

    async with scripted(script) as port:
        c = Client("127.0.0.1", port, client_id="c", keepalive=1)
        await c.connect()
        async with asyncio.timeout(5):
            reason = await c.closed
        assert isinstance(reason, ConnectionLost)
        assert "keep-alive" in str(reason)
        assert pings == 1


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="keepalive"):
        Client("h", 1, client_id="c", keepalive=70000)
    with pytest.raises(ValueError, match="max_inflight"):
        Client("h", 1, client_id="c", max_inflight=0)
    c = Client("h", 1, client_id="c")
    with pytest.raises(ValueError, match="QoS 2"):
        await c.publish("t", b"", qos=2)
    with pytest.raises(ValueError, match="QoS 2"):
        await c.subscribe(("t", 2))
    with pytest.raises(ConnectionLost, match="not connected"):
        await c.publish("t", b"", qos=1)

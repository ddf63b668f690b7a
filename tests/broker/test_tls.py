"""TLS listeners of the embedded broker (``mqtts`` and ``wss``), with real TLS clients trusting the
development certificate that ``mqchat up --tls-dev`` makes."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import aiomqtt
import pytest

from harness.ports import free_port
from mqchat import tls
from mqchat.cli import child_env, with_dev_tls
from mqchat.config import load_settings
from mqchat.errors import ConfigError
from mqchat.mqtt import codec
from tests.broker.conftest import StartBroker
from tests.broker.launch import BrokerProcess
from tests.broker.rawclient import PacketReader

pytestmark = pytest.mark.e2e


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))  # the host name is checked against the SAN


def tls_broker(start_broker: StartBroker, tmp_path: Path) -> tuple[BrokerProcess, Path, int, int]:
    cert, key = tls.dev_pair(tmp_path / "tls")
    tls_port, wss_port = free_port(), free_port()
    broker = start_broker("mqchat", auth=True, env={
        "MQCHAT_BROKER__TLS_PORT": str(tls_port), "MQCHAT_BROKER__WSS_PORT": str(wss_port),
        "MQCHAT_BROKER__TLS_CERT_FILE": str(cert), "MQCHAT_BROKER__TLS_KEY_FILE": str(key)})
    return broker, cert, tls_port, wss_port


def test_the_dev_pair_is_private_and_reused(tmp_path: Path) -> None:
    cert, key = tls.dev_pair(tmp_path)
    assert (cert.stat().st_mode & 0o777, key.stat().st_mode & 0o777) == (0o600, 0o600)
    before = cert.read_bytes()
    assert tls.dev_pair(tmp_path) == (cert, key)
    assert cert.read_bytes() == before, "a valid pair is kept"
    tls.dev_pair(tmp_path, "chat.example")
    assert cert.read_bytes() != before, "a pair that does not cover the host is made again"


def test_tls_ports_without_a_certificate_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_cert_file"):
        load_settings(data_dir=tmp_path, broker={"tls_port": 8883})


def test_tls_dev_hands_the_listeners_to_the_broker_process(tmp_path: Path) -> None:
    settings = with_dev_tls(load_settings(data_dir=tmp_path))
    env = child_env(settings, "redis://x")
    assert (env["MQCHAT_BROKER__TLS_PORT"], env["MQCHAT_BROKER__WSS_PORT"]) == ("8883", "8084")
    assert Path(env["MQCHAT_BROKER__TLS_CERT_FILE"]) == (tmp_path / tls.DEV_CERT).resolve()


def test_mqtts_with_the_codec_over_python_ssl(start_broker: StartBroker, tmp_path: Path) -> None:
    broker, cert, tls_port, _ = tls_broker(start_broker, tmp_path)
    token = broker.token("ualice", "phone")
    raw = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
    with client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        reader = PacketReader(sock)
        sock.sendall(codec.encode_connect("ualice:phone", username="ualice", password=token, keepalive=30))
        assert reader.read(5) == (0x20, b"\x00\x00")  # CONNACK accepted
        sock.sendall(codec.encode_subscribe(1, [("user/ualice/events", 1)]))
        assert reader.read(5) == (0x90, b"\x00\x01\x01")
        sock.sendall(codec.PINGREQ_BYTES)
        assert reader.read(5)[0] == 0xD0


def test_a_plain_client_on_the_tls_port_gets_nothing(start_broker: StartBroker, tmp_path: Path) -> None:
    broker, _, tls_port, _ = tls_broker(start_broker, tmp_path)
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as sock:
        sock.sendall(codec.encode_connect("ualice:phone", username="ualice", password=broker.token("ualice", "phone")))
        try:
            data = sock.recv(10)
        except (ConnectionResetError, TimeoutError):
            data = b""
        assert not data.startswith(b"\x20"), "no CONNACK in the clear on the TLS port"


def test_wss_and_mqtts_with_aiomqtt(start_broker: StartBroker, tmp_path: Path) -> None:
    broker, cert, tls_port, wss_port = tls_broker(start_broker, tmp_path)
    context = client_context(cert)
    wss_token, mqtts_token = broker.token("ualice", "phone"), broker.token("ualice", "tablet")

    async def exchange() -> str:
        async with aiomqtt.Client("127.0.0.1", wss_port, identifier="ualice:phone", username="ualice",
                                  password=wss_token, transport="websockets", websocket_path="/mqtt",
                                  tls_context=context) as over_wss, \
                aiomqtt.Client("127.0.0.1", tls_port, identifier="ualice:tablet", username="ualice",
                               password=mqtts_token, tls_context=context) as over_mqtts:
            await over_wss.subscribe("presence/ualice/tablet", qos=1)
            await over_mqtts.publish("presence/ualice/tablet", b'{"status":"online","ts":1}', qos=1)
            async with asyncio.timeout(5):
                async for message in over_wss.messages:
                    return message.topic.value
        raise AssertionError("no message over wss")

    assert asyncio.run(exchange()) == "presence/ualice/tablet"

from __future__ import annotations

from pathlib import Path

import pytest

from mqchat.cli import parse_store_url
from mqchat.errors import ConfigError


def test_store_urls() -> None:
    assert parse_store_url("sqlite") == {"store": {"backend": "sqlite"}}
    assert parse_store_url("cassandra://db1,db2:9043/chat") == {
        "store": {"backend": "cassandra"}, "cassandra": {"hosts": ["db1", "db2"], "port": 9043, "keyspace": "chat"}}
    assert parse_store_url("cassandra://db1") == {"store": {"backend": "cassandra"}, "cassandra": {"hosts": ["db1"]}}


@pytest.mark.parametrize("url", ["mysql://x/y", "cassandra://", "cassandra:///ks", "cassandra://h:port/ks", "x"])
def test_bad_store_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="--store"):
        parse_store_url(url)


def test_broker_addresses() -> None:
    from mqchat.cli import parse_broker

    assert parse_broker("emqx.internal:1883") == {"mqtt": {"host": "emqx.internal", "port": 1883, "broker": "external"}}
    for bad in ("emqx", ":1883", "emqx:port", "emqx:"):
        with pytest.raises(ConfigError, match="--broker"):
            parse_broker(bad)


def test_up_refuses_an_external_broker_setting_without_broker_address(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from mqchat.cli import cmd_up

    monkeypatch.setenv("MQCHAT_MQTT__BROKER", "external")
    with pytest.raises(ConfigError, match="no --broker"):
        cmd_up(argparse.Namespace(config=None, broker=None, data_dir=tmp_path / "data"))
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_an_mqtt_port_that_contradicts_the_external_broker_is_refused() -> None:
    import argparse

    from mqchat.cli import settings_from_args

    args = argparse.Namespace(config=None, broker="127.0.0.1:1884", mqtt_port=1883)
    with pytest.raises(ConfigError, match="--mqtt-port 1883 contradicts --broker"):
        settings_from_args(args)
    same = argparse.Namespace(config=None, broker="127.0.0.1:1884", mqtt_port=1884)
    assert settings_from_args(same).mqtt.port == 1884


def test_mqchat_broker_runs_the_broker_process_with_explicit_flags() -> None:
    """``mqchat broker`` becomes ``python -m broker`` with flags, never importing it or editing os.environ."""
    import sys

    from mqchat.cli import broker_argv

    assert broker_argv(1884, no_auth=False) == [sys.executable, "-m", "broker", "--port", "1884"]
    assert broker_argv(1884, no_auth=True) == [sys.executable, "-m", "broker", "--port", "1884",
                                               "--host", "127.0.0.1", "--no-auth"]


def test_the_banners_token_command_runs_from_any_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shlex
    import subprocess

    from mqchat import auth
    from mqchat.cli import mqchat_command
    from mqchat.config import load_settings

    auth.load_keys(load_settings(data_dir=tmp_path), create=True)
    command = [*shlex.split(mqchat_command()), "token", "--user", "u1", "--device", "d1", "--data-dir",
               str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(".") == 2  # a JWT


def test_tls_ports_are_checked_and_shown_like_the_others(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``--tls-dev`` ports clash-checked before any child starts, and printed in the banner."""
    import socket

    from mqchat import auth
    from mqchat.cli import banner, check_ports
    from mqchat.config import Settings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        settings = Settings(data_dir=tmp_path, mqtt={"host": "127.0.0.1", "port": 1, "ws_port": 2},
                            http={"host": "127.0.0.1", "port": 3},
                            broker={"tls_port": taken, "tls_cert_file": tmp_path / "c", "tls_key_file": tmp_path / "k"})
        with pytest.raises(ConfigError, match=f"port {taken} \\(MQTT over TLS\\)"):
            check_ports(settings)
    clash = settings.model_copy(update={"broker": settings.broker.model_copy(update={"tls_port": 2})})
    with pytest.raises(ConfigError, match="MQTT over TLS and MQTT over WebSocket are both set to port 2"):
        check_ports(clash)
    keys = auth.load_keys(settings, create=True)
    shown = banner(settings, keys, "redis://127.0.0.1:6379", external=False)
    assert f"mqtts://127.0.0.1:{taken}" in shown
    assert "wss://" not in shown


# --- mqchat up --bridges N --workers N ---------------------------------------------------------------


def up_settings(**fields: object):  # type: ignore[no-untyped-def]
    import argparse

    from mqchat.cli import settings_from_args

    return settings_from_args(argparse.Namespace(config=None, **fields))


def test_bridges_and_workers_become_numbered_instances_with_their_own_identity() -> None:
    from mqchat.cli import instance_env, instances

    settings = up_settings(bridges=3, workers=2)
    procs = instances(settings, external=False)
    assert [(p.name, p.module, p.index) for p in procs] == [
        ("broker", "broker", 0), ("bridge", "bridge", 0), ("bridge-1", "bridge", 1), ("bridge-2", "bridge", 2),
        ("api", "api", 0), ("workers", "workers", 0), ("workers-1", "workers", 1)]
    assert next(p.name for p in instances(settings, external=True)) == "bridge"  # no embedded broker
    envs = {p.name: instance_env(settings, p, 9000 + i) for i, p in enumerate(procs)}
    assert envs["bridge-2"] == {"MQCHAT_OPS__BRIDGE_PORT": "9003", "MQCHAT_BRIDGE__WORKER_ID": "2",
                                "MQCHAT_BRIDGE__COORDINATE": "true"}
    assert envs["workers-1"] == {"MQCHAT_OPS__WORKERS_PORT": "9006", "MQCHAT_OPS__INSTANCE": "1"}
    assert envs["api"] == {}
    single = up_settings()
    bridge = next(p for p in instances(single, external=False) if p.module == "bridge")
    assert "MQCHAT_BRIDGE__COORDINATE" not in instance_env(single, bridge, 9000)  # one bridge: as configured


def test_configured_operations_ports_count_up_per_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    from mqchat.cli import health_ports, instances

    monkeypatch.setenv("MQCHAT_OPS__BRIDGE_PORT", "9100")
    monkeypatch.setenv("MQCHAT_BRIDGE__WORKER_ID", "4")
    settings = up_settings(bridges=2, workers=2, http_port=8181)
    ports = health_ports(settings, instances(settings, external=True))
    assert (ports["bridge-4"], ports["bridge-5"], ports["api"]) == (9100, 9101, 8181)
    assert ports["workers"] != ports["workers-1"]  # free ports when ops.workers_port is 0


@pytest.mark.parametrize(("flag", "n"), [("bridges", 0), ("bridges", 17), ("workers", -1), ("workers", 99)])
def test_instance_counts_out_of_range_are_refused_naming_the_flag(flag: str, n: int) -> None:
    with pytest.raises(ConfigError, match=f"--{flag} {n}: expected 1 to 16"):
        up_settings(**{flag: n})


def test_instance_counts_from_the_environment_are_validated_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQCHAT_UP__WORKERS", "17")
    with pytest.raises(ConfigError, match=r"up\.workers"):
        up_settings()


def test_worker_ids_and_ports_that_would_overflow_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from mqchat.cli import instances

    monkeypatch.setenv("MQCHAT_BRIDGE__WORKER_ID", "1020")
    with pytest.raises(ConfigError, match=r"5 bridges from bridge\.worker_id 1020 need worker ids up to 1024"):
        instances(up_settings(bridges=5), external=False)
    assert [p.name for p in instances(up_settings(bridges=4), external=True)][:4] == [
        "bridge-1020", "bridge-1021", "bridge-1022", "bridge-1023"]
    monkeypatch.delenv("MQCHAT_BRIDGE__WORKER_ID")
    monkeypatch.setenv("MQCHAT_OPS__WORKERS_PORT", "65535")
    with pytest.raises(ConfigError, match=r"ops\.workers_port 65535"):
        instances(up_settings(workers=2), external=False)

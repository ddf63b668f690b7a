"""The ``mqchat`` command: run the whole system, mint dev tokens, inspect settings.

This is the launcher: the only module of :mod:`mqchat` that starts the process packages, and it
does so as child processes (``python -m broker`` / ``bridge`` / ``api``), exactly as a production
deployment runs them, so ``mqchat up`` exercises the real topology on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prometheus_client

from mqchat import auth, lifecycle, supervisor, tls
from mqchat.config import Settings, load_settings, reference_markdown
from mqchat.errors import ConfigError, InvalidId, MqchatError
from mqchat.log import setup_logging

if TYPE_CHECKING:
    from mqchat.storage.redis_migrate import LayoutMigration

#: Start order; shutdown runs in reverse so the bridge drains while the broker is still up.
PROCESSES = ("broker", "bridge", "api", "workers")
READY_TIMEOUT_S = 30.0
#: Most bridges or workers instances ``mqchat up`` runs (``up.bridges``, ``up.workers``).
MAX_INSTANCES = 16
STOP_TIMEOUT_S = 20.0


def parse_store_url(url: str) -> dict[str, Any]:
    """``sqlite`` or ``cassandra://host1,host2[:port]/keyspace`` → settings overrides.

    Raises:
        ConfigError: anything else.
    """
    if url == "sqlite":
        return {"store": {"backend": "sqlite"}}
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "cassandra" or not parsed.netloc:
        raise ConfigError(f"--store {url!r}: expected 'sqlite' or 'cassandra://host1,host2[:port]/keyspace'")
    hosts, _, port = parsed.netloc.rpartition(":") if ":" in parsed.netloc else (parsed.netloc, "", "")
    cassandra: dict[str, Any] = {"hosts": [h for h in hosts.split(",") if h]}
    if port:
        if not port.isdigit():
            raise ConfigError(f"--store {url!r}: port {port!r} is not a number")
        cassandra["port"] = int(port)
    if parsed.path.strip("/"):
        cassandra["keyspace"] = parsed.path.strip("/")
    return {"store": {"backend": "cassandra"}, "cassandra": cassandra}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings with the command-line flags on top (sources deep-merge, so a flag overrides one field)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "store", None):
        overrides.update(parse_store_url(args.store))
    if getattr(args, "broker", None):
        overrides.update(parse_broker(args.broker))
        wanted = getattr(args, "mqtt_port", None)
        if wanted is not None and wanted != overrides["mqtt"]["port"]:
            raise ConfigError(f"--mqtt-port {wanted} contradicts --broker {args.broker}: with an external broker, "
                              "its address (port included) comes from --broker")
    if getattr(args, "directory", None):
        overrides["directory"] = {"url": args.directory}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    for flag in ("bridges", "workers"):
        n = getattr(args, flag, None)
        if n is not None:
            if not 1 <= n <= MAX_INSTANCES:
                raise ConfigError(f"--{flag} {n}: expected 1 to {MAX_INSTANCES} (processes on this machine; "
                                  "beyond that, run them on several machines: deploy/)")
            overrides.setdefault("up", {})[flag] = n
    flags = {("mqtt", "port"): "mqtt_port", ("mqtt", "ws_port"): "ws_port", ("http", "port"): "http_port"}
    for (section, field), flag in flags.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.setdefault(section, {})[field] = value
    return load_settings(args.config, **overrides)


def child_env(settings: Settings, redis_url: str) -> dict[str, str]:
    """Hand the resolved settings to a child through the environment (flags included)."""
    env = dict(os.environ)
    env["MQCHAT_REDIS__URL"] = redis_url
    env["MQCHAT_STORE__BACKEND"] = settings.store.backend
    if settings.directory.url is not None:
        env["MQCHAT_DIRECTORY__URL"] = settings.directory.url
    env["MQCHAT_CASSANDRA__HOSTS"] = json.dumps(list(settings.cassandra.hosts))
    env["MQCHAT_CASSANDRA__PORT"] = str(settings.cassandra.port)
    env["MQCHAT_CASSANDRA__KEYSPACE"] = settings.cassandra.keyspace
    env["MQCHAT_DATA_DIR"] = str(settings.data_dir.resolve())
    env["MQCHAT_MQTT__HOST"] = settings.mqtt.host
    env["MQCHAT_MQTT__PORT"] = str(settings.mqtt.port)
    env["MQCHAT_MQTT__WS_PORT"] = str(settings.mqtt.ws_port)
    env["MQCHAT_MQTT__BROKER"] = settings.mqtt.broker
    env["MQCHAT_HTTP__HOST"] = settings.http.host
    env["MQCHAT_HTTP__PORT"] = str(settings.http.port)
    b = settings.broker
    for name, value in (("TLS_PORT", b.tls_port), ("WSS_PORT", b.wss_port), ("TLS_CERT_FILE", b.tls_cert_file),
                        ("TLS_KEY_FILE", b.tls_key_file)):
        if value is not None:
            env[f"MQCHAT_BROKER__{name}"] = str(value)
    return env


DEV_TLS_PORT, DEV_WSS_PORT = 8883, 8084


def with_dev_tls(settings: Settings) -> Settings:
    """``--tls-dev``: the development certificate (made if needed) and the TLS ports (8883 and
    8084 unless configured)."""
    cert, key = tls.dev_pair(settings.data_dir, settings.mqtt.host)
    b = settings.broker
    broker = b.model_copy(update={"tls_port": b.tls_port or DEV_TLS_PORT, "wss_port": b.wss_port or DEV_WSS_PORT,
                                  "tls_cert_file": cert.resolve(), "tls_key_file": key.resolve()})
    return settings.model_copy(update={"broker": broker})


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(settings: Settings, *, embedded_broker: bool = True) -> None:
    wanted = [("HTTP API", settings.http.host, settings.http.port, "--http-port")]
    if embedded_broker:
        wanted += [
            ("MQTT", settings.mqtt.host, settings.mqtt.port, "--mqtt-port"),
            ("MQTT over WebSocket", settings.mqtt.host, settings.mqtt.ws_port, "--ws-port"),
        ]
        b = settings.broker
        if b.tls_port is not None:
            wanted.append(("MQTT over TLS", settings.mqtt.host, b.tls_port, "MQCHAT_BROKER__TLS_PORT=N"))
        if b.wss_port is not None:
            wanted.append(("MQTT over secure WebSocket", settings.mqtt.host, b.wss_port, "MQCHAT_BROKER__WSS_PORT=N"))
    seen: dict[int, str] = {}
    for what, host, port, flag in wanted:
        if port in seen:
            raise ConfigError(f"{what} and {seen[port]} are both set to port {port}; choose another with {flag} N")
        seen[port] = what
        if _port_in_use(host, port):
            raise ConfigError(f"port {port} ({what}) on {host} is already in use; choose another with {flag} N")


def _child_setup() -> None:
    # If `mqchat up` dies without cleaning up, its children get SIGTERM (Linux).
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _spawn(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own process group: a Ctrl-C in the terminal reaches only `mqchat up`, which then stops the
    # children in order (SIGTERM, drain), instead of every process getting the signal at once.
    return subprocess.Popen([sys.executable, "-m", name], env=env, preexec_fn=_child_setup, process_group=0)


def _redis_child(settings: Settings) -> tuple[supervisor.Child, str]:
    """A private redis-server for this data directory, on a free loopback port, with AOF on (read
    markers are user state). A restart reuses the port and the append-only file."""
    binary = shutil.which("redis-server") or ("/usr/sbin/redis-server" if Path("/usr/sbin/redis-server").exists()
                                              else None)
    if binary is None:
        raise ConfigError("redis-server is not installed: install it (apt-get install redis-server) "
                          "or point MQCHAT_REDIS__URL at a Redis")
    port = _free_port()
    workdir = settings.data_dir / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir.resolve()), "--save", "",
           "--appendonly", "yes", "--appendfsync", "everysec", "--logfile", ""]
    probe = supervisor.redis_probe("127.0.0.1", port)

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, preexec_fn=_child_setup, process_group=0)

    child = supervisor.Child("redis", spawn, probe, ready=lambda: probe(1.0))
    return child, f"redis://127.0.0.1:{port}/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Instance:
    """One process ``mqchat up`` runs.

    Attributes:
        name: its name as a child of the supervisor and of its ready file ``run/{name}.ready``:
            ``broker``, ``bridge`` / ``bridge-{worker id}``, ``api``, ``workers`` / ``workers-{index}``.
        module: what it runs (``python -m {module}``).
        index: its number among the instances of its module (0 for the first).
    """

    name: str
    module: str
    index: int = 0


def instances(settings: Settings, *, external: bool) -> list[Instance]:
    """The processes ``mqchat up`` runs, in start order: the embedded broker (unless ``external``),
    ``up.bridges`` bridges, the API, ``up.workers`` workers instances.

    Raises:
        ConfigError: the bridges' worker ids or the operations ports would run past their range.
    """
    up, base = settings.up, settings.bridge.worker_id
    if base + up.bridges - 1 > MAX_WORKER_ID:
        raise ConfigError(f"{up.bridges} bridges from bridge.worker_id {base} need worker ids up to "
                          f"{base + up.bridges - 1}; the largest is {MAX_WORKER_ID}: lower bridge.worker_id")
    for module, count in (("bridge", up.bridges), ("workers", up.workers)):
        configured = int(getattr(settings.ops, f"{module}_port"))
        if configured and configured + count - 1 > 65535:
            raise ConfigError(f"ops.{module}_port {configured} + {count} instances runs past port 65535")
    out: list[Instance] = []
    for module in PROCESSES:
        if module == "broker" and external:
            continue
        if module == "bridge":
            out += [Instance("bridge" if base + i == 0 else f"bridge-{base + i}", module, i) for i in range(up.bridges)]
        elif module == "workers":
            out += [Instance("workers" if i == 0 else f"workers-{i}", module, i) for i in range(up.workers)]
        else:
            out.append(Instance(module, module))
    return out


MAX_WORKER_ID = 1023


def health_ports(settings: Settings, processes: list[Instance]) -> dict[str, int]:
    """The port each child serves ``/healthz`` on: the configured operations port (plus the instance's
    index), else a free loopback port (the supervisor needs one to tell a hung child from a busy one).
    The API uses its HTTP port."""
    ports: dict[str, int] = {}
    for p in processes:
        if p.module == "api":
            ports[p.name] = settings.http.port
        else:
            configured = int(getattr(settings.ops, f"{p.module}_port"))
            ports[p.name] = configured + p.index if configured else _free_port()
    return ports


def instance_env(settings: Settings, p: Instance, probe_port: int) -> dict[str, str]:
    """What one instance gets on top of the shared child environment: its operations port, and its
    identity among its kind (a bridge's worker id, a workers instance's number)."""
    if p.module == "api":
        return {}
    env = {f"MQCHAT_OPS__{p.module.upper()}_PORT": str(probe_port)}
    if p.module == "bridge":
        env["MQCHAT_BRIDGE__WORKER_ID"] = str(settings.bridge.worker_id + p.index)
        if settings.up.bridges > 1:  # several bridges order disjoint channels, by partition leases
            env["MQCHAT_BRIDGE__COORDINATE"] = "true"
    elif p.module == "workers":
        env["MQCHAT_OPS__INSTANCE"] = str(p.index)
    return env


def _process_child(settings: Settings, p: Instance, env: dict[str, str], probe_port: int) -> supervisor.Child:
    host = settings.http.host if p.module == "api" else settings.ops.host
    if host in ("0.0.0.0", "::", ""):  # a wildcard listener answers on loopback too
        host = "127.0.0.1"
    ready = lifecycle.ready_file(settings, p.name)
    return supervisor.Child(
        p.name, lambda: _spawn(p.module, env), supervisor.http_probe(f"http://{host}:{probe_port}/healthz"),
        ready=ready.exists, before_spawn=lambda: lifecycle.clear_ready(settings, p.name),
    )


def _wait_ready(child: supervisor.Child, timeout_s: float) -> None:
    """Block until ``child`` announces readiness (first start only; restarts are watched by ticks)."""
    deadline = time.monotonic() + timeout_s
    while not child.ready():
        if child.proc is not None and child.proc.poll() is not None:
            raise MqchatError(f"{child.name} exited with status {child.proc.returncode} while starting "
                              "(see its log above)")
        if time.monotonic() > deadline:
            raise MqchatError(f"{child.name} did not become ready within {timeout_s:.0f}s")
        time.sleep(0.05)


def banner(settings: Settings, keys: auth.KeySet, redis_url: str, *, external: bool,
           processes: list[Instance] | None = None) -> str:
    m, h = settings.mqtt, settings.http
    api = f"http://{h.host}:{h.port}"
    dev_note = "" if keys.can_issue else " (unavailable: external issuer)"
    ws = "(the external broker's)" if external else f"ws://{m.host}:{m.ws_port}/mqtt"
    b = settings.broker
    tls_lines = ""
    if not external and b.tls_port is not None:
        tls_lines += f"\n  MQTT/TLS        mqtts://{m.host}:{b.tls_port}"
    if not external and b.wss_port is not None:
        tls_lines += f"\n  MQTT/WSS        wss://{m.host}:{b.wss_port}/mqtt"
    procs_line = ""
    if processes:
        procs_line = "\n  Processes       " + ", ".join(p.name for p in processes)
        if settings.up.bridges > 1:
            procs_line += f"\n                  ({settings.up.bridges} bridges on a shared intake, coordinated by " \
                          "partition leases)"
    return f"""
mqchat is running (data in {settings.data_dir.resolve()})

  MQTT            mqtt://{m.host}:{m.port}{"  (external broker)" if external else ""}
  MQTT/WebSocket  {ws}{tls_lines}
  HTTP API        {api}   (OpenAPI: {api}/docs)
  Redis           {redis_url}{procs_line}

Get a token:
  curl -s -XPOST {api}/v1/users -H 'content-type: application/json' \\
       -d '{{"username":"alice","password":"correct horse"}}'
  curl -s -XPOST {api}/v1/login -H 'content-type: application/json' \\
       -d '{{"username":"alice","password":"correct horse","device_id":"phone1"}}'
or, for development:  {mqchat_command()} token --user USER_ID --device DEVICE_ID{dev_note}

Connect with client id USER_ID:DEVICE_ID, username USER_ID, password TOKEN. Ctrl-C stops.
"""


def mqchat_command() -> str:
    """How to run ``mqchat`` from any shell: the venv's script path unless ``mqchat`` on PATH is it."""
    script = Path(sys.executable).parent / "mqchat"
    on_path = shutil.which("mqchat")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "mqchat"
    return str(script) if script.exists() else f"{sys.executable} -m mqchat.cli"


def parse_broker(address: str) -> dict[str, Any]:
    """``--broker host:port`` → settings overrides for an external MQTT broker.

    Raises:
        ConfigError: not ``host:port``.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--broker {address!r}: expected host:port")
    return {"mqtt": {"host": host, "port": int(port), "broker": "external"}}


def cmd_up(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging(settings.log_level, json_lines=settings.log_json, process="mqchat")
    external = bool(getattr(args, "broker", None))
    if settings.mqtt.broker == "external" and not external:
        # the embedded broker writes presence leases itself: the workers' ingester must not as well
        raise ConfigError("mqtt.broker is 'external' but no --broker HOST:PORT was given: mqchat up would run "
                          "the embedded broker; pass --broker, or unset mqtt.broker")
    processes = instances(settings, external=external)
    check_ports(settings, embedded_broker=not external)
    os.umask(lifecycle.PRIVATE_UMASK)  # children (Redis included) inherit it: data files are 0600
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)  # a directory made by an older version may be world-readable
    keys = auth.load_keys(settings, create=True)
    if getattr(args, "tls_dev", False):
        if external:
            raise ConfigError("--tls-dev configures the embedded broker's listeners; it cannot be used with --broker")
        settings = with_dev_tls(settings)
    asyncio.run(_migrate(settings))
    for p in processes:
        lifecycle.clear_ready(settings, p.name)

    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sup: supervisor.Supervisor | None = None
    status = 0
    try:
        # Started group by group, in order; the instances of one module (bridges, workers) start together.
        groups: list[list[supervisor.Child]] = []
        redis_url = settings.redis.url
        if redis_url is None:
            redis, redis_url = _redis_child(settings)
            groups.append([redis])
        probe_ports = health_ports(settings, processes)
        env = child_env(settings, redis_url)
        for p in processes:
            child = _process_child(settings, p, env | instance_env(settings, p, probe_ports[p.name]),
                                   probe_ports[p.name])
            if p.index == 0:
                groups.append([child])
            else:
                groups[-1].append(child)
        sup = supervisor.Supervisor([c for g in groups for c in g],
                                    supervisor.RestartPolicy(ready_timeout_s=READY_TIMEOUT_S))
        if settings.ops.up_port:
            prometheus_client.start_http_server(settings.ops.up_port, addr=settings.ops.host, registry=sup.registry)
        for group in groups:
            for child in group:
                sup.start(child)
            for child in group:
                _wait_ready(child, READY_TIMEOUT_S)
                sup.running(child)
            if group[0].name == "redis":  # our private Redis, before anything uses it: bring its keys up to date
                _report_redis_migration(asyncio.run(_migrate_redis(redis_url, settings.redis.key_prefix)))
            if stopping:
                return 0
        print(banner(settings, keys, redis_url, external=external, processes=processes), flush=True)
        while not stopping:
            sup.tick()
            time.sleep(0.1)
        print("mqchat: shutting down (draining in-flight sends)", file=sys.stderr, flush=True)
    except supervisor.CrashLoop as exc:
        print(f"mqchat: {exc}", file=sys.stderr)
        status = 1
    except MqchatError as exc:
        print(f"mqchat: {exc}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the drain short
        if sup is not None:
            sup.stop_all(STOP_TIMEOUT_S)
    return status


async def _migrate(settings: Settings) -> None:
    """Create or upgrade the embedded databases (and a PostgreSQL directory) before any process opens them."""
    from mqchat.storage.factory import migrate_directory, open_directory, open_message_store

    await migrate_directory(settings)

    for opener in (open_directory, open_message_store):
        store = await opener(settings)
        await store.close()


def cmd_token(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    keys = auth.load_keys(settings)
    try:
        token = auth.issue(keys, user_id=args.user, device_id=args.device, now=int(time.time()),
                           ttl_s=args.ttl)
    except InvalidId as exc:
        raise ConfigError(str(exc)) from None
    print(token)
    return 0


def broker_argv(port: int, *, no_auth: bool) -> list[str]:
    """The command line that runs the broker process for ``mqchat broker`` (``--no-auth``: on loopback)."""
    argv = [sys.executable, "-m", "broker", "--port", str(port)]
    if no_auth:
        argv += ["--host", "127.0.0.1", "--no-auth"]
    return argv


def cmd_broker(args: argparse.Namespace) -> int:
    # The broker runs as its own process, as under ``mqchat up``: this process becomes it, so
    # signals reach the broker directly and its exit status is ours.
    argv = broker_argv(args.port, no_auth=args.no_auth)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def cmd_migrate(args: argparse.Namespace) -> int:
    """PostgreSQL directory migrations when ``directory.url`` is set; Cassandra's when the message store
    is Cassandra or no directory URL is given (what this command did before the PostgreSQL directory)."""
    from mqchat.storage.cql.command import migrate_command

    settings = settings_from_args(args)
    setup_logging(settings.log_level, json_lines=settings.log_json, process="migrate")
    if settings.directory.url is not None:
        from mqchat.errors import StorageError
        from mqchat.storage.factory import migrate_directory

        try:
            applied = asyncio.run(migrate_directory(settings))
        except StorageError as exc:
            print(f"mqchat: directory migration failed: {exc}", file=sys.stderr)
            return 1
        print(f"mqchat: directory migrations applied: {applied or 'none (already current)'}", file=sys.stderr)
        if settings.store.backend != "cassandra":
            return 0
    return migrate_command(settings)


async def _reindex(settings: Settings, channel: str | None, url: str) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mqchat.search import open_search_index
    from mqchat.search.reindex import reindex
    from mqchat.storage.factory import open_directory, open_message_store
    from mqchat.storage.message_log import MessageLog
    from mqchat.storage.redis_client import RedisClient

    redis = RedisClient.from_settings(settings.redis) if settings.redis.url else None
    store = await open_message_store(settings)
    directory = await open_directory(settings)
    index = await open_search_index(url, language=settings.search.language)
    try:
        with Progress(TextColumn("reindex"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=False) as bar:
            task = bar.add_task("reindex", total=None)
            report = await reindex(index, store, directory, MessageLog(redis) if redis else None, channel=channel,
                                   batch=settings.search.batch,
                                   on_total=lambda n: bar.update(task, total=n),
                                   on_progress=lambda n: bar.advance(task, n))
    finally:
        await index.close()
        await directory.close()
        await store.close()
        if redis is not None:
            await redis.close()
    print(f"mqchat: reindexed {report.messages} messages of {report.channels} channel(s); removed "
          f"{report.swept} stale documents; replayed {report.replayed} changes made meanwhile", file=sys.stderr)
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild the search index from the message store, all channels or one."""
    from mqchat.ids import is_valid_id

    settings = settings_from_args(args)
    setup_logging(settings.log_level, json_lines=settings.log_json, process="reindex")
    if args.channel is not None and not is_valid_id(args.channel):
        raise ConfigError(f"--channel {args.channel!r}: not a channel id")
    url = args.index or settings.search.index_url(settings.data_dir)
    try:
        return asyncio.run(_reindex(settings, args.channel, url))
    except MqchatError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"mqchat: reindex failed: {exc}", file=sys.stderr)
        return 1


async def _migrate_redis(url: str, prefix: str) -> LayoutMigration:
    from mqchat.storage.redis_client import RedisClient
    from mqchat.storage.redis_migrate import migrate_key_layout

    redis = RedisClient.from_url(url, prefix)
    try:
        return await migrate_key_layout(redis)
    finally:
        await redis.close()


def _report_redis_migration(done: LayoutMigration, *, always: bool = False) -> None:
    if done.renamed or done.deleted or always:
        print(f"mqchat: redis key layout: {done.renamed} keys renamed, {done.deleted} earlier presence keys "
              "deleted", file=sys.stderr)
    if done.conflicts:
        print(f"mqchat: redis key layout: {len(done.conflicts)} earlier keys left in place, their new name "
              f"already exists: {', '.join(done.conflicts[:10])}", file=sys.stderr)


def cmd_migrate_redis(args: argparse.Namespace) -> int:
    """Move a Redis written by an earlier mqchat to the cluster-safe key layout (docs/redis.md)."""
    settings = settings_from_args(args)
    setup_logging(settings.log_level, json_lines=settings.log_json, process="migrate-redis")
    url = args.url or settings.redis.url
    if url is None:
        raise ConfigError("migrate-redis needs the Redis: --url or redis.url (MQCHAT_REDIS__URL); the private "
                          "Redis of `mqchat up` is migrated by `mqchat up` itself when it starts")
    try:
        done = asyncio.run(_migrate_redis(url, settings.redis.key_prefix))
    except MqchatError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"mqchat: migrate-redis failed: {exc}", file=sys.stderr)
        return 1
    _report_redis_migration(done, always=True)
    return 1 if done.conflicts else 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(reference_markdown(), end="")
        return 0
    settings = settings_from_args(args)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mqchat", description="Mobile-first chat over MQTT.")
    p.add_argument("--config", type=Path, help="TOML settings file (default: $MQCHAT_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run broker, bridge and HTTP API on embedded defaults")
    up.add_argument("--data-dir", type=Path, help="where the databases and the dev secret live (default: ./data)")
    up.add_argument("--mqtt-port", type=int, help="MQTT over TCP (default 1883)")
    up.add_argument("--ws-port", type=int, help="MQTT over WebSocket (default 8083)")
    up.add_argument("--http-port", type=int, help="HTTP API (default 8080)")
    up.add_argument("--broker", metavar="HOST:PORT", help="use this MQTT broker (Mosquitto, EMQX, ...) instead "
                    "of starting the embedded one; it must enforce mqchat's auth itself (see deploy/brokers/)")
    up.add_argument("--store", help="message store: 'sqlite' (default) or 'cassandra://host1,host2[:port]/keyspace' "
                    "(run `mqchat migrate` with the same settings first)")
    up.add_argument("--directory", metavar="URL", help="directory database: postgresql://user@host[:port]/db "
                    "(default: SQLite in the data directory)")
    up.add_argument("--bridges", type=int, metavar="N", help="run N bridges (default 1, up to 16): they share the "
                    "send intake and the channels (bridge.coordinate), to use several cores; up.bridges")
    up.add_argument("--workers", type=int, metavar="N", help="run N workers instances (default 1, up to 16): they "
                    "share push, search and presence ingest, one leads presence; up.workers")
    up.add_argument("--tls-dev", action="store_true", help="also listen for mqtts (8883) and wss (8084) with a "
                    "self-signed development certificate made in the data directory (tls-dev.crt, tls-dev.key); "
                    "clients trust tls-dev.crt")
    up.set_defaults(func=cmd_up)

    tok = sub.add_parser("token", help="print a development JWT for a user's device")
    tok.add_argument("--user", required=True)
    tok.add_argument("--device", required=True)
    tok.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds (default one day)")
    tok.add_argument("--data-dir", type=Path)
    tok.set_defaults(func=cmd_token)

    br = sub.add_parser("broker", help="run only the broker")
    br.add_argument("--port", type=int, default=1883)
    br.add_argument("--no-auth", action="store_true", help="anonymous and no ACL, on loopback only "
                    "(for protocol conformance tools)")
    br.add_argument("--data-dir", type=Path)
    br.set_defaults(func=cmd_broker)

    mig = sub.add_parser("migrate", help="apply pending schema migrations: the PostgreSQL directory "
                         "(directory.url) and/or Cassandra (cassandra.* settings)")
    mig.add_argument("--directory", metavar="URL", help="the PostgreSQL directory to migrate (directory.url)")
    mig.set_defaults(func=cmd_migrate)

    mr = sub.add_parser("migrate-redis", help="move a Redis written by an earlier mqchat to the cluster-safe key "
                        "layout (stop every mqchat process first; idempotent)")
    mr.add_argument("--url", help="the Redis (default: redis.url); a single server, not a cluster")
    mr.set_defaults(func=cmd_migrate_redis)

    rx = sub.add_parser("reindex", help="rebuild the search index from the message store (safe while the "
                        "indexer runs)")
    rx.add_argument("--channel", metavar="C", help="only this channel (default: every channel, and documents "
                    "of messages the store no longer has are removed)")
    rx.add_argument("--index", metavar="URL", help="the index to build (default: search.url); e.g. a new "
                    "sqlite:///<path> or postgresql://… to build beside the live one")
    rx.add_argument("--data-dir", type=Path)
    rx.set_defaults(func=cmd_reindex)

    cfg = sub.add_parser("config", help="print the effective settings (secrets masked)")
    cfg.add_argument("--data-dir", type=Path)
    cfg.add_argument("--markdown", action="store_true", help="print the settings reference instead")
    cfg.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"mqchat: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())

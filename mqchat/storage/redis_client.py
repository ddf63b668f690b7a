"""The one way into Redis: a client that owns the connection pool, the keys, the Lua scripts and the
mapping of Redis errors to ours.

::

    composition root ── RedisClient.from_url(url, prefix) ──┬── RedisState(redis)     presence, read state
      (owns it; closes it on exit)                          ├── PushState(redis)      push registry and streams
                                                            └── ChannelLeases(redis)  bridge partition leases

Every Redis command of mqchat is written in ``mqchat/storage/`` (a layout test keeps it so); the
stores above are views over one :class:`RedisClient` and never close it. Key names are in
:mod:`mqchat.storage.keys`; the scripts, each with a KEYS/ARGV header, in ``mqchat/storage/lua/``.

Single Redis or Redis Cluster: :meth:`RedisClient.from_url` takes ``redis://`` (``rediss://``,
``unix://``) for one server and ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://``
for TLS) for a cluster, whose listed nodes are only where discovery starts. The stores do not care
which: every multi-key script and ``MULTI`` touches keys of one hash tag (:mod:`mqchat.storage.keys`),
pipelines are split by node by the cluster client, scripts are loaded on every primary when a node
answers ``NOSCRIPT``. ``docs/redis.md`` has the operator's side.

Errors: a connection or timeout error becomes :class:`~mqchat.errors.StorageUnavailable` (temporary:
try again later); any other Redis error becomes :class:`~mqchat.errors.StorageError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar, cast
from urllib.parse import unquote

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import AskError, NoScriptError, RedisError, ResponseError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mqchat.config import RedisSettings
from mqchat.errors import ConfigError, StorageError, StorageUnavailable
from mqchat.storage.keys import DEFAULT_PREFIX, Keys

T = TypeVar("T")
Item = TypeVar("Item")

#: The script behind :meth:`RedisClient.append_stream`.
STREAM_APPEND = "stream_append.lua"
#: Entries per ``stream_append.lua`` call (bounds how long one call holds Redis).
STREAM_APPEND_BATCH = 500

#: Optimistic-transaction (WATCH) attempts before giving up for this round.
WATCH_ATTEMPTS = 5
#: URL schemes of a Redis Cluster (``rediss+``: TLS).
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_TIMEOUTS: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
#: Connections one client opens to one Redis server (``redis.max_connections``); a command issued
#: while all are busy waits for one (up to :data:`DEFAULT_POOL_TIMEOUT_S`) instead of opening more.
DEFAULT_MAX_CONNECTIONS = 64
#: How long a command waits for a free pooled connection before failing with
#: :class:`~mqchat.errors.StorageUnavailable` (``redis.pool_timeout_s``).
DEFAULT_POOL_TIMEOUT_S = 5.0


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, bool]:
    """Parse ``redis+cluster://[user:password@]host:port[,host:port...][/]``.

    Returns:
        ``(nodes, username, password, tls)``.

    Raises:
        ConfigError: the URL is not shaped like that (no node, a node without a port, a database
            number: a cluster has only database 0).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ConfigError(f"not a Redis Cluster URL (expected {CLUSTER_SCHEMES[0]}://host:port,...): {url!r}")
    rest = rest.rstrip("/")
    username = password = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        user, has_password, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    if "/" in rest or "?" in rest:
        raise ConfigError(f"a Redis Cluster URL names nodes only (no database, no options): {url!r}")
    nodes: list[tuple[str, int]] = []
    for part in rest.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"bad Redis Cluster node {part!r} in {url!r}: expected host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, username, password, scheme.startswith("rediss")


def load_script(name: str) -> str:
    """The text of one of the Lua scripts in ``mqchat/storage/lua/``."""
    return resources.files("mqchat.storage").joinpath("lua", name).read_text()


def storage_error(exc: RedisError) -> StorageError:
    """Our error for a Redis error: :class:`StorageUnavailable` when Redis could not be reached in time."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return StorageUnavailable(f"redis: {exc}")
    return StorageError(f"redis: {exc}")


#: A client that never connects: transactions on a cluster are first queued on one of its pipelines
#: to learn their keys.
_PROBE = aioredis.Redis()


def _first_key(args: tuple[Any, ...]) -> Any:
    """The first key of a queued command (``EVAL``/``EVALSHA``: after the script and the key count)."""
    name = str(args[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    return args[1] if len(args) > 1 else None


def _redirected(exc: ResponseError) -> bool:
    """A cluster answer meaning "this slot is served elsewhere now": ``MOVED``/``ASK`` (redis-py raises
    the first queued command's error when one aborts a ``MULTI``), or the ``EXECABORT`` they cause."""
    text = str(exc)
    return isinstance(exc, AskError) or ("EXECABORT" in text and ("MOVED" in text or "ASK" in text))


class RedisClient:
    """mqchat's Redis: one ``redis.asyncio.Redis`` (its connection pool), a key prefix and the scripts.

    Build it with :meth:`from_url` in a composition root, build the stores from it, and :meth:`close`
    it last. Only the stores of :mod:`mqchat.storage` issue commands through it.

    Args:
        client: a ``redis.asyncio.Redis`` or ``RedisCluster`` (created without connecting; closed by
            :meth:`close`).
        prefix: key prefix (``redis.key_prefix``).
        node_options: cluster only: connection options (credentials, TLS, timeouts) of the plain
            clients opened to single primaries for transactions.
        node_pool: cluster only: ``max_connections`` and ``pool_timeout_s`` of those clients' pools.
    """

    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str = DEFAULT_PREFIX, *,
                 node_options: dict[str, Any] | None = None, node_pool: dict[str, Any] | None = None) -> None:
        self.cluster = isinstance(client, RedisCluster)
        """True when talking to a Redis Cluster (a few reads spanning slots are done per slot)."""
        # The cluster client has the same command methods as the single one (and splits pipelines
        # by node); the stores are typed against the single one.
        self._r = cast(aioredis.Redis, client)
        self.keys = Keys(prefix)
        self._scripts: dict[str, AsyncScript] = {}
        #: Cluster only: a plain client per primary, for MULTI/EXEC and WATCH on one slot (the
        #: cluster client's own transactions run each queued command on a thread of its own).
        self._nodes: dict[tuple[str, int], aioredis.Redis] = {}
        self._node_options = dict(node_options or {})
        pool = node_pool or {}
        self._node_pool: dict[str, Any] = {
            "max_connections": int(pool.get("max_connections", DEFAULT_MAX_CONNECTIONS)),
            "timeout": float(pool.get("pool_timeout_s", DEFAULT_POOL_TIMEOUT_S))}

    @classmethod
    def from_settings(cls, redis: RedisSettings) -> RedisClient:
        """:meth:`from_url` with the ``redis.*`` settings (URL, key prefix, pool bound and wait): how
        every process builds its client.

        Raises:
            ConfigError: ``redis.url`` is not set, or as :meth:`from_url`.
        """
        if not redis.url:
            raise ConfigError("redis.url is not set (MQCHAT_REDIS__URL)")
        return cls.from_url(redis.url, redis.key_prefix, max_connections=redis.max_connections,
                            pool_timeout_s=redis.pool_timeout_s)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S) -> RedisClient:
        """A client for ``url``: ``redis://host:port/db`` (one server) or
        ``redis+cluster://host:port,host:port`` (a Redis Cluster); nothing connects until the first command.

        The pool is bounded: at most ``max_connections`` connections to one server (to each cluster
        node), and a command issued while all are busy waits up to ``pool_timeout_s`` for one
        (then :class:`~mqchat.errors.StorageUnavailable`; on a cluster, whose client cannot wait,
        at once), so a burst of commands (a CONNECT storm's
        revocation checks) queues on the pool instead of exhausting Redis' ``maxclients``.

        Raises:
            ConfigError: a malformed cluster URL, a key prefix with braces, or a pool bound below 1.
        """
        try:
            keys = Keys(prefix)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if max_connections < 1 or pool_timeout_s <= 0:
            raise ConfigError(f"redis pool: max_connections must be >= 1 and the timeout > 0 "
                              f"(got {max_connections}, {pool_timeout_s})")
        if url.partition("://")[0] in CLUSTER_SCHEMES:
            nodes, username, password, tls = cluster_nodes(url)
            options: dict[str, Any] = {"username": username, "password": password, "ssl": tls, **_TIMEOUTS}
            # redis-py's cluster client has no blocking pool: past ``max_connections`` to one node a
            # command fails at once (StorageUnavailable) instead of waiting; the bound still holds.
            cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                                   max_connections=max_connections, **options)
            node_pool = {"max_connections": max_connections, "pool_timeout_s": pool_timeout_s}
            return cls(cluster, keys.prefix, node_options=options, node_pool=node_pool)
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=pool_timeout_s,
                                                        health_check_interval=30, **_TIMEOUTS)
        return cls(aioredis.Redis.from_pool(pool), keys.prefix)

    @property
    def driver(self) -> aioredis.Redis:
        """The redis-py client, for the stores of :mod:`mqchat.storage` (and tests that inspect keys).
        A :class:`~redis.asyncio.cluster.RedisCluster` when :attr:`cluster` (same commands)."""
        return self._r

    async def close(self) -> None:
        for node in self._nodes.values():
            await node.aclose()
        await self._r.aclose()

    async def ping(self) -> None:
        """Raises:
        StorageUnavailable: Redis cannot be reached.
        """
        await self.call(self._r.ping())

    # --- error mapping -----------------------------------------------------------------------------

    async def call(self, awaitable: Awaitable[Any]) -> Any:
        """Await one command (or a pipeline's ``execute()``), with Redis errors mapped to ours."""
        try:
            return await awaitable
        except RedisError as exc:
            raise storage_error(exc) from exc

    # --- scripts -----------------------------------------------------------------------------------

    def script(self, name: str) -> AsyncScript:
        """The script ``mqchat/storage/lua/{name}``, registered once per client (EVALSHA, loaded on demand)."""
        found = self._scripts.get(name)
        if found is None:
            found = self._scripts[name] = self._r.register_script(load_script(name))
        return found

    def queue_script(self, pipe: Pipeline, name: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue one ``EVALSHA`` of script ``name`` on ``pipe`` (pass ``scripts=[name]`` to :meth:`pipelined`).

        Sent as a raw command: the cluster client refuses ``pipe.evalsha()`` in its pipelines, but
        routes a raw ``EVALSHA`` by its keys like any other command.
        """
        pipe.execute_command("EVALSHA", self.script(name).sha, len(keys), *keys, *args)

    async def run_script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script once (atomic on the server)."""
        return await self.call(self.script(name)(keys=list(keys), args=list(args)))

    def slot_groups(self, items: Iterable[Item], key: Callable[[Item], str]) -> list[list[Item]]:
        """``items`` split for scripts that may only touch one hash slot on a cluster: on a Redis
        Cluster, one group per slot of ``key(item)`` (first-seen order, items in order within a
        group); on a single server, one group of everything."""
        if not self.cluster:
            group = list(items)
            return [group] if group else []
        groups: dict[int, list[Item]] = {}
        for item in items:
            groups.setdefault(key_slot(key(item).encode()), []).append(item)
        return list(groups.values())

    async def append_stream(self, stream: str, entries: Sequence[Mapping[str, str]], *, maxlen: int) -> None:
        """``XADD stream MAXLEN ~ maxlen * fields`` for each entry, in order, as one
        ``stream_append.lua`` call per :data:`STREAM_APPEND_BATCH` entries, in one round trip
        (one command to pack instead of one per entry).

        Raises:
            StorageUnavailable: Redis cannot be reached.
            StorageError: any other Redis error.
        """
        if not entries:
            return
        flat = [[x for kv in e.items() for x in kv] for e in entries]
        step = STREAM_APPEND_BATCH
        calls = [[msgspec.json.encode(flat[i:i + step])] for i in range(0, len(flat), step)]

        def build(pipe: Pipeline) -> None:
            for args in calls:
                self.queue_script(pipe, STREAM_APPEND, [stream], [maxlen, *args])

        await self.pipelined(build, scripts=[STREAM_APPEND])

    # --- pipelines ---------------------------------------------------------------------------------

    async def pipelined(self, build: Callable[[Pipeline], None], *, transaction: bool = False,
                        scripts: Sequence[str] = ()) -> list[Any]:
        """Queue commands with ``build``, send them in one round trip, and return the replies.

        Args:
            build: queues the commands on the pipeline it is given; called again on a retry (and,
                for a transaction on a cluster, once more to find the slot's node).
            transaction: wrap the commands in ``MULTI``/``EXEC`` (all or nothing). Every key must
                be in one hash slot (one hash tag: :mod:`mqchat.storage.keys`); on a cluster the
                transaction runs on the primary serving that slot, sent again once if the slot
                moved meanwhile.
            scripts: names of the scripts ``build`` runs with :meth:`queue_script`. If
                Redis lost them (first use, a restart), they are loaded and the whole pipeline is
                sent once more, so the commands in it must be safe to repeat.

        Raises:
            StorageUnavailable: Redis cannot be reached.
            StorageError: any other Redis error, or a transaction whose keys span hash slots.
        """
        reloaded = refreshed = False
        while True:
            client = await self._transaction_client(build) if transaction and self.cluster else self._r
            pipe = client.pipeline(transaction=transaction)
            build(pipe)
            if not len(pipe):
                return []
            try:
                return list(await pipe.execute())
            except NoScriptError as exc:
                if reloaded or not scripts:
                    raise storage_error(exc) from exc
                reloaded = True
                for name in scripts:
                    await self.call(self._r.script_load(self.script(name).script))
            except ResponseError as exc:
                if refreshed or not (client is not self._r and _redirected(exc)):
                    raise storage_error(exc) from exc
                refreshed = True
                await self._refresh_slots()
            except RedisError as exc:
                raise storage_error(exc) from exc

    async def watched(self, key: str, body: Callable[[Pipeline], Awaitable[T]], *, default: T) -> T:
        """An optimistic transaction on ``key``: ``WATCH``, read and decide in ``body``, ``MULTI``/``EXEC``.

        ``body`` gets a pipeline already watching ``key`` (immediate mode: reads return values), calls
        ``pipe.multi()``, queues the writes and executes them, and returns its result. When another
        client changed ``key`` meanwhile, ``body`` runs again, up to :data:`WATCH_ATTEMPTS` times;
        then ``default`` is returned (the caller tries again later). Every key ``body`` touches must
        be in ``key``'s hash slot (on a cluster it runs on the primary serving that slot).

        Raises:
            StorageUnavailable: Redis cannot be reached.
            StorageError: any other Redis error.
        """
        for _ in range(WATCH_ATTEMPTS):
            client = await self._owner(key)
            try:
                async with client.pipeline(transaction=True) as pipe:
                    await pipe.watch(key)
                    return await body(pipe)
            except WatchError:
                continue
            except ResponseError as exc:
                if not (client is not self._r and _redirected(exc)):
                    raise storage_error(exc) from exc
                await self._refresh_slots()
            except RedisError as exc:
                raise storage_error(exc) from exc
        return default

    # --- cluster: transactions on the slot's primary ---------------------------------------------------

    async def _owner(self, key: str) -> aioredis.Redis:
        """The client to run a transaction on ``key``'s slot with: the one client of a single Redis,
        or a plain client of the cluster primary serving the slot."""
        if not self.cluster:
            return self._r
        cluster = cast(RedisCluster, self._r)
        await self.call(cluster.initialize())  # no-op once the slot map is known
        node = cluster.get_node_from_key(key)
        if node is None:
            raise StorageUnavailable(f"redis: no cluster node serves the slot of {key!r}")
        address = (str(node.host), int(node.port))
        found = self._nodes.get(address)
        if found is None:
            options = dict(self._node_options)
            if options.pop("ssl", False):
                options["connection_class"] = aioredis.SSLConnection
            pool = aioredis.BlockingConnectionPool(host=address[0], port=address[1], **options, **self._node_pool)
            found = self._nodes[address] = aioredis.Redis.from_pool(pool)
        return found

    async def _transaction_client(self, build: Callable[[Pipeline], None]) -> aioredis.Redis:
        """The client for a transaction of the commands ``build`` queues (see :meth:`_owner`).

        Raises:
            StorageError: the commands' keys span hash slots (a transaction a cluster cannot run).
        """
        probe = _PROBE.pipeline(transaction=True)
        build(probe)
        keys = [key for args, _options in probe.command_stack if (key := _first_key(args)) is not None]
        if not keys:
            return self._r
        if len({key_slot(k.encode() if isinstance(k, str) else k) for k in keys}) > 1:
            raise StorageError(f"redis: a transaction across hash slots: {sorted({str(k) for k in keys})}")
        return await self._owner(str(keys[0]) if not isinstance(keys[0], bytes) else keys[0].decode())

    async def _refresh_slots(self) -> None:
        """Read the cluster's slot map again (a slot moved to another primary)."""
        await self.call(cast(RedisCluster, self._r).nodes_manager.initialize())

    # --- streams -----------------------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create consumer group ``group`` on ``stream`` (and the stream) if missing; idempotent."""
        try:
            await self._r.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise storage_error(exc) from exc
        except RedisError as exc:
            raise storage_error(exc) from exc

"""Simulated devices: thousands of phones in one asyncio process, following the client rules.

Each :class:`SimDevice` is one installation of an app, written the way docs/protocol.md and
docs/sync.md tell app developers to write it:

- connect with client id ``{user}:{device}``, the user id as username and the token as password,
  a last will of ``offline`` on its device presence topic; subscribe to its ack topic, its user
  events and every channel stream (subscribe first, then sync, so nothing falls in between);
- ``POST /v1/sync`` with ``(channel, epoch, last_seq)`` for every channel on each (re)connect,
  paged while ``has_more``; then resend every unacked send with its original ``cmid``;
- per channel keep ``(epoch, last_seq)``: a live message at ``last_seq + 1`` is appended, one at
  or below is a duplicate, one above is held aside while the gap is fetched from history;
- keep each send in an outbox until its ack (not the PUBACK) arrives; republish it with the same
  ``cmid`` after ``ack_timeout_s`` and after every reconnect;
- after a failed or lost connection, follow :func:`mobile_sim.reconnect.decide` (retry with
  capped, fully jittered backoff; re-login when the token expired; stop on terminal refusals).

Everything a device sees goes into one :class:`mobile_sim.observe.Observations`. The MQTT side
is :class:`mobile_sim.mqtt.MqttClient` (an ``asyncio.Protocol``, no task per connection); each
device has one task, which sleeps while it is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from harness.http import ApiError, Http
from mobile_sim.mqtt import ConnectionLost, Message, MqttClient
from mobile_sim.observe import Badge, Delivery, Observations, Online, PresenceSeen, Push, Send, StatesSeen, Synced
from mobile_sim.provision import Provisioner, Token, UserSpec
from mobile_sim.reconnect import Backoff, Failure, Relogin, Retry, Stop, classify, decide
from mobile_sim.system import Target
from mqchat import fold, schema, topics

logger = logging.getLogger(__name__)

OFFLINE_WILL = b'{"status":"offline","ts":0}'
TYPING_ON = b'{"typing":true}'
ACK_WAIT_CAP_S = 60.0
"""Longest wait for an ack before republishing on the same connection."""


@dataclass(frozen=True)
class FleetConfig:
    """How every simulated device behaves.

    Attributes:
        keepalive_s: MQTT keep-alive (a PINGREQ per device this often).
        ack_timeout_s: republish an unacked send (same ``cmid``) after this long.
        connect_timeout_s: TCP connect plus CONNACK.
        backoff: reconnect delays (see :mod:`mobile_sim.reconnect`).
        sync_limit: ``limit`` of each ``POST /v1/sync``.
        http_connections: HTTP connections shared by all devices.
        sync_concurrency: syncs in flight at once, over all devices.
        token_margin_s: a token this close to ``exp`` counts as expired.
    """

    keepalive_s: int = 60
    ack_timeout_s: float = 5.0
    connect_timeout_s: float = 15.0
    backoff: Backoff = field(default_factory=Backoff)
    sync_limit: int = 500
    http_connections: int = 32
    sync_concurrency: int = 24
    token_margin_s: float = 60.0


class _SyncChannel(msgspec.Struct):
    channel: str
    status: str
    epoch: int
    last_seq: int
    has_more: bool
    messages: list[schema.ChannelMessage]


class _SyncResult(msgspec.Struct):
    channels: list[_SyncChannel]


class _Page(msgspec.Struct):
    messages: list[schema.ChannelMessage]
    has_more: bool


_sync_decoder = msgspec.json.Decoder(_SyncResult)
_page_decoder = msgspec.json.Decoder(_Page)


@dataclass(slots=True)
class ChannelState:
    """What a device holds for one channel: its cursor and messages waiting behind a gap."""

    epoch: int = 0
    last_seq: int = 0
    known: bool = False
    """The cursor is valid (else the next sync lists nothing for it and takes the latest page)."""
    held: dict[int, schema.ChannelMessage] = field(default_factory=dict)
    filling: bool = False
    events: dict[int, schema.ChannelMessage] = field(default_factory=dict)
    """Every event the device holds, by seq (only with ``Fleet.keep_events``): what it folds."""


@dataclass(slots=True)
class Outgoing:
    send: Send
    topic: str
    payload: bytes
    t_last: float
    waits: int = 0
    """Republished on this connection without an ack so far (the wait doubles each time)."""


def _swallow(fut: asyncio.Future[Any]) -> None:
    """Done-callback for fire-and-forget publishes: a lost connection is handled by the outbox."""
    if not fut.cancelled():
        fut.exception()


class SimDevice:
    """One simulated app installation (see the module docstring for the rules it follows)."""

    def __init__(self, fleet: Fleet, user: UserSpec, device_id: str, channels: Iterable[str]) -> None:
        self.fleet = fleet
        self.user = user
        self.device_id = device_id
        self.name = f"{user.user_id}:{device_id}"
        self.channels: dict[str, ChannelState] = {c: ChannelState() for c in channels}
        self.outbox: dict[str, Outgoing] = {}
        self.watch: list[str] = []
        """Users whose presence this device shows (it subscribes to ``presence/{user}``)."""
        self.presence: dict[str, str] = {}
        self.push_token: str | None = None
        self.client: MqttClient | None = None
        self.online: Online | None = None
        self.want_online = False
        self.ready = False
        """Connected, subscribed and synced: live traffic can flow."""
        self.stopped: Stop | None = None
        self.net_down_until = 0.0
        self.ending: Literal["disconnect", "network_loss"] | None = None
        self.resumed_at: float | None = None
        self.connected_at: float | None = None
        self.connects = 0
        self.failures: Counter[str] = Counter()
        self.token: Token | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what scenarios call ---------------------------------------------------------------------

    def start(self) -> None:
        """Go online (connect, then keep reconnecting by the table until told otherwise)."""
        self.want_online = True
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sim.{self.name}")

    def foreground(self) -> None:
        self.want_online = True
        self._wake.set()

    async def background(self) -> None:
        """The app goes to the background: a clean DISCONNECT (no will); a push is now due for new messages."""
        self.want_online = False
        self._wake.set()
        client = self.client
        if client is not None and client.connected:
            self.ending = "disconnect"
            self.ready = False
            with contextlib.suppress(ConnectionLost, OSError):
                await client.disconnect()

    def lose_network(self, outage_s: float = 0.0) -> None:
        """The network goes away without a DISCONNECT (the broker publishes the will); for
        ``outage_s`` seconds every connection attempt fails as an unreachable network would."""
        self.net_down_until = max(self.net_down_until, time.monotonic() + outage_s)
        client = self.client
        if client is not None and client.connected:
            self.ending = "network_loss"
            self.ready = False  # at once: the transport reports the loss on the next loop turn
            client.abort()

    def send(self, channel: str, body: str) -> Send:
        """The user sends a message: into the outbox, and published now if the device is ready."""
        return self.send_event(channel, kind="text", body=body)

    def send_event(self, channel: str, **fields: Any) -> Send:
        """A send of any kind (``text``, ``edit``, ``reaction``, ...; docs/protocol.md), like :meth:`send`."""
        fleet = self.fleet
        now = time.monotonic()
        cmid = fleet.next_cmid()
        send = Send(self.name, channel, cmid, now)
        fleet.obs.sends.append(send)
        fleet.sends[cmid] = send
        fleet.n_sent += 1
        if fields.get("kind") != "text":
            fleet.non_counting.add(cmid)
        out = Outgoing(send, topics.send(self.user.user_id, self.device_id, channel),
                       schema.encode(schema.SendRequest(cmid=cmid, **fields)), now)
        self.outbox[cmid] = out
        fleet.with_outbox.add(self)
        if self.ready:
            self._publish(out)
        return send

    def typing(self, channel: str) -> None:
        if self.ready and self.client is not None:
            with contextlib.suppress(ConnectionLost):
                self.client.publish_nowait(topics.typing(channel, self.user.user_id), TYPING_ON, 0)

    async def mark_read(self, channel: str) -> None:
        """Move this user's read marker to what this device holds (``POST /v1/channels/{id}/read``)."""
        st = self.channels[channel]
        if not st.known or st.last_seq == 0:
            return
        seq, epoch = st.last_seq, st.epoch
        await self.fleet.http.call("POST", f"/v1/channels/{channel}/read", await self._token_value(),
                                   json={"seq": seq, "epoch": epoch})
        key = (self.user.user_id, channel)
        self.fleet.read_marks[key] = max(self.fleet.read_marks.get(key, 0), seq)

    async def sync(self) -> None:
        """``POST /v1/sync`` for every channel (paged), then fill any gap left behind held messages."""
        fleet = self.fleet
        async with fleet.sync_sem:
            t0 = time.monotonic()
            pending = True
            while pending:
                body = {"channels": [{"channel": c, "epoch": st.epoch, "last_seq": st.last_seq}
                                     for c, st in self.channels.items() if st.known],
                        "limit": fleet.cfg.sync_limit}
                doc = _sync_decoder.decode(
                    await fleet.http.raw("POST", "/v1/sync", await self._token_value(), json=body))
                fleet.n_syncs += 1
                now = time.monotonic()
                pending = False
                for ch in doc.channels:
                    st = self.channels.get(ch.channel)
                    if st is None:
                        continue
                    msgs = ch.messages
                    if ch.status != "ok":
                        st.epoch, st.known = ch.epoch, True
                        st.held = {s: m for s, m in st.held.items() if m.epoch == st.epoch}
                        st.last_seq = msgs[0].seq - 1 if msgs else ch.last_seq
                    self._apply(ch.channel, st, msgs, now)
                    pending = pending or ch.has_more
            if fleet.recording:
                fleet.obs.syncs.append(Synced(self.name, t0))
        for c, st in self.channels.items():
            if st.held and not st.filling:
                self._fill_later(c)

    # -- the connection loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        fleet = self.fleet
        attempt = 0
        relogged = False
        while not fleet.stopping:
            if not self.want_online:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                client = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = classify(exc)
                self.failures[failure] += 1
                fleet.failures[failure] += 1
                decision = decide(failure, attempt, token_expired=self._token_expired(), relogged=relogged,
                                  rand=fleet.rng.random(), backoff=fleet.cfg.backoff)
                if isinstance(decision, Stop):
                    self.stopped = decision
                    fleet.stops[decision.failure] += 1
                    logger.warning("%s stops reconnecting: %s", self.name, decision.reason)
                    return
                if isinstance(decision, Relogin):
                    relogged = True
                    fleet.relogins += 1
                    self.token = await fleet.prov.token(self.user, self.device_id, fresh=True)
                    continue
                attempt += 1
                await self._pause(decision.delay_s)
                continue
            attempt, relogged = 0, False
            await self._resume(client)
            if not self.want_online and client.connected:  # sent to the background while connecting
                self.ending = "disconnect"
                with contextlib.suppress(ConnectionLost, OSError):
                    await client.disconnect()
            reason = await client.closed
            self._ended(reason)
            if self.want_online and not fleet.stopping:
                decision = decide(Failure.CONNECTION_LOST, 0, token_expired=False, relogged=False,
                                  rand=fleet.rng.random(), backoff=fleet.cfg.backoff)
                if isinstance(decision, Retry):
                    attempt = 1
                    await self._pause(decision.delay_s)

    async def _pause(self, delay_s: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._wake.wait()

    async def _connect(self) -> MqttClient:
        fleet = self.fleet
        # The token as held: an expired one is refused (CONNACK 0x05) and the table re-logs in.
        if self.token is None:
            self.token = await fleet.prov.token(self.user, self.device_id)
        token = self.token.value
        if self.client is None:
            self.client = MqttClient(
                client_id=self.name, username=self.user.user_id, password=token, keepalive=fleet.cfg.keepalive_s,
                clean_session=True, will=(topics.device_presence(self.user.user_id, self.device_id), OFFLINE_WILL,
                                          1, True),
                on_message=self._on_message)
        client = self.client
        client.password = token
        if time.monotonic() < self.net_down_until:
            raise OSError(errno.ENETUNREACH, "network is unreachable (simulated outage)")
        t0 = time.monotonic()
        fleet.connecting += 1
        try:
            await client.connect(fleet.target.mqtt_host, fleet.target.mqtt_port,
                                 timeout=fleet.cfg.connect_timeout_s)
        finally:
            fleet.connecting -= 1
        now = time.monotonic()
        fleet.connect_ms.append((now, (now - t0) * 1000))
        fleet.connected_log.append((now, self.name))
        self.connects += 1
        self.connected_at = now
        self.ending = None
        self.online = Online(self.name, now)
        if fleet.recording:
            fleet.obs.online.append(self.online)
        fleet.n_online += 1
        return client

    async def _resume(self, client: MqttClient) -> None:
        """Subscribe, sync, resend the outbox (docs/sync.md, "On (re)connect")."""
        uid, fleet = self.user.user_id, self.fleet
        filters = [(topics.ack(uid, self.device_id), 1), (topics.user_events(uid), 1)]
        filters += [(topics.stream(c), 1) for c in self.channels]
        filters += [(topics.user_presence(u), 1) for u in self.watch]
        try:
            granted = await client.subscribe(*filters)
            refused = sum(1 for g in granted if g == 0x80)
            if refused:
                fleet.refused_subscriptions += refused
                logger.warning("%s: %d subscriptions refused", self.name, refused)
            await self._sync_retrying()
        except (ConnectionLost, OSError):
            return  # the loop sees the closed connection and reconnects
        if not client.connected:
            return
        self.ready = True
        now = time.monotonic()
        for out in list(self.outbox.values()):
            out.send.attempts += 1
            out.waits = 0
            self._publish(out, now)
        self.resumed_at = now
        fleet.on_resumed(self, now)

    async def _sync_retrying(self) -> None:
        for attempt in range(6):
            try:
                await self.sync()
                return
            except ApiError as exc:
                self.fleet.sync_failures += 1
                logger.info("%s: sync failed (%s); retrying", self.name, exc)
                await asyncio.sleep(self.fleet.cfg.backoff.delay(attempt, self.fleet.rng.random()) + 0.1)
        logger.warning("%s: sync kept failing; live traffic only until the next sync", self.name)

    def _ended(self, reason: BaseException | None) -> None:
        fleet = self.fleet
        now = time.monotonic()
        self.ready = False
        fleet.n_online -= 1
        if self.online is not None and fleet.recording:
            self.online.t_closed = now
            self.online.how = self.ending or ("disconnect" if reason is None else "network_loss")
        if self.ending is None and reason is not None:
            fleet.unexpected_closes += 1
            logger.info("%s: connection lost: %s", self.name, reason)
        self.online = None
        self.ending = None

    # -- tokens ----------------------------------------------------------------------------------

    def _token_expired(self) -> bool:
        return self.token is not None and self.token.expires_at - self.fleet.cfg.token_margin_s <= time.time()

    async def _token_value(self) -> str:
        if self.token is None or self._token_expired():
            self.token = await self.fleet.prov.token(self.user, self.device_id, fresh=self.token is not None)
        return self.token.value

    # -- incoming --------------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        t = time.monotonic()
        first = msg.topic[0]
        if first == "c":
            self._on_stream(schema.decode_channel_message(msg.payload), t)
        elif first == "d":
            self._on_ack(schema.decode_ack(msg.payload), t)
        elif first == "p":
            status = msgspec.json.decode(msg.payload).get("status", "?")
            self.presence[msg.topic.split("/", 2)[1]] = status
        elif first == "u":
            self.fleet.n_events += 1
            if b'"gap"' in msg.payload and msgspec.json.decode(msg.payload).get("type") == "gap":
                # the broker dropped messages for this device (docs/protocol.md, User events): sync
                self.fleet.gap_notices += 1
                if self.ready:
                    self.fleet.spawn(self._sync_retrying(), f"gap.{self.name}")

    def _keep(self, m: schema.ChannelMessage) -> None:
        fleet = self.fleet
        fleet.count_at[(m.channel, m.epoch, m.seq)] = m.count_seq
        st = self.channels.get(m.channel)
        if fleet.keep_events and st is not None:
            st.events[m.seq] = m

    def _on_stream(self, m: schema.ChannelMessage, t: float) -> None:
        fleet = self.fleet
        self._keep(m)
        if fleet.recording:
            fleet.obs.deliveries.append(Delivery(self.name, m.channel, m.id, m.seq, m.sender, t, "live", m.cmid))
        fleet.n_live += 1
        send = fleet.sends.get(m.cmid)
        if send is not None:
            fleet.recent_deliver_ms.append((t - send.t_first) * 1000)
        st = self.channels.get(m.channel)
        if st is None:
            return
        if not self.ready or not st.known or st.filling:
            st.held[m.seq] = m  # the sync or fill in progress decides
            return
        if m.epoch != st.epoch:
            st.held[m.seq] = m
            self._fill_later(m.channel)
            return
        if m.seq <= st.last_seq:
            return
        if m.seq == st.last_seq + 1:
            st.last_seq = m.seq
            if st.held:
                self._drain(st)
            return
        st.held[m.seq] = m
        fleet.gaps_seen += 1
        self._fill_later(m.channel)

    def _apply(self, channel: str, st: ChannelState, msgs: list[schema.ChannelMessage], t: float) -> None:
        """Append messages from history (ascending); those already held were recorded when they arrived."""
        fleet = self.fleet
        for m in msgs:
            self._keep(m)
            if m.seq <= st.last_seq:
                continue
            if m.seq != st.last_seq + 1:
                break
            st.last_seq = m.seq
            if st.held.pop(m.seq, None) is None and fleet.recording:
                fleet.obs.deliveries.append(Delivery(self.name, channel, m.id, m.seq, m.sender, t, "sync", m.cmid))
                fleet.n_sync_deliveries += 1
        self._drain(st)

    @staticmethod
    def _drain(st: ChannelState) -> None:
        held = st.held
        for s in [s for s in held if s <= st.last_seq]:
            del held[s]
        while st.last_seq + 1 in held:
            st.last_seq += 1
            del held[st.last_seq]

    def _fill_later(self, channel: str) -> None:
        st = self.channels[channel]
        if st.filling:
            return
        st.filling = True
        self.fleet.spawn(self._fill(channel), f"fill.{self.name}.{channel}")

    async def _fill(self, channel: str) -> None:
        """Fetch what lies between ``last_seq`` and the held messages from history (docs/sync.md)."""
        st = self.channels[channel]
        fleet = self.fleet
        try:
            while st.held and min(st.held) > st.last_seq + 1:
                if any(m.epoch != st.epoch for m in st.held.values()):
                    st.filling = False
                    await self.sync()
                    return
                t0 = time.monotonic()
                async with fleet.sync_sem:
                    raw = await fleet.http.raw("GET", f"/v1/channels/{channel}/messages", await self._token_value(),
                                               params={"after": st.last_seq, "limit": 200})
                fleet.n_fills += 1
                page = _page_decoder.decode(raw)
                if not page.has_more and fleet.recording:
                    fleet.obs.syncs.append(Synced(self.name, t0, channel))
                if not page.messages:
                    break
                self._apply(channel, st, page.messages, time.monotonic())
        except ApiError as exc:
            logger.info("%s: gap fill of %s failed: %s", self.name, channel, exc)
        finally:
            st.filling = False

    def _on_ack(self, ack: schema.Ack, t: float) -> None:
        fleet = self.fleet
        cmid = ack.cmid or ""
        send = fleet.sends.get(cmid)
        if send is None:
            return
        if ack.ok:
            if ack.id is not None:
                send.ack_ids.append(ack.id)
            if send.t_ack is None:
                send.t_ack, send.id, send.seq = t, ack.id, ack.seq
                fleet.n_acked += 1
                fleet.recent_ack_ms.append((t - send.t_first) * 1000)
                if ack.seq is not None and cmid not in fleet.non_counting:  # the server moves it on texts only
                    key = (self.user.user_id, send.channel)
                    fleet.own_seq[key] = max(fleet.own_seq.get(key, 0), ack.seq)
            self.outbox.pop(cmid, None)
        elif ack.error is not None and ack.error.code == "unavailable":
            fleet.n_unavailable += 1  # stays in the outbox: retried with the same cmid
        else:
            send.error = ack.error.code if ack.error else "?"
            self.outbox.pop(cmid, None)
        if not self.outbox:
            fleet.with_outbox.discard(self)

    # -- outgoing --------------------------------------------------------------------------------

    def _publish(self, out: Outgoing, now: float | None = None) -> None:
        client = self.client
        if client is None:
            return
        out.t_last = time.monotonic() if now is None else now
        try:
            fut = client.publish_nowait(out.topic, out.payload, 1)
        except ConnectionLost:
            return
        if fut is not None:
            fut.add_done_callback(_swallow)

    def retry_unacked(self, now: float) -> None:
        """Republish sends whose ack is overdue (same cmid)."""
        if not self.ready:
            return
        timeout = self.fleet.cfg.ack_timeout_s
        for out in list(self.outbox.values()):
            # The PUBACK came, so the broker has it: a missing ack means a slow (or restarted)
            # bridge. Waiting longer each time keeps a backlog from being multiplied by retries.
            if now - out.t_last >= min(ACK_WAIT_CAP_S, timeout * 2**out.waits):
                out.waits += 1
                out.send.attempts += 1
                self.fleet.n_republished += 1
                self._publish(out, now)

    async def close(self) -> None:
        """End the device for good (the run is over)."""
        self.want_online = False
        self._wake.set()
        client = self.client
        if client is not None and client.connected:
            self.ending = "disconnect"
            with contextlib.suppress(ConnectionLost, OSError, TimeoutError):
                async with asyncio.timeout(5):
                    await client.disconnect()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Fleet:
    """All simulated devices of a run, the shared HTTP client, and the counters the display reads.

    Use as an async context manager; :meth:`finish` runs the quiet period and the final sync.
    """

    def __init__(self, target: Target, obs: Observations, cfg: FleetConfig | None = None, *,
                 seed: int | None = None) -> None:
        self.target = target
        self.obs = obs
        self.cfg = cfg or FleetConfig()
        self.rng = random.Random(seed)
        self.http = Http(target.api, connections=self.cfg.http_connections)
        self.prov = Provisioner(self.http, target.jwt_secret)
        self.devices: dict[str, SimDevice] = {}
        self.users: dict[str, UserSpec] = {}
        self.sends: dict[str, Send] = {}
        self.read_marks: dict[tuple[str, str], int] = {}
        self.own_seq: dict[tuple[str, str], int] = {}
        self.count_at: dict[tuple[str, int, int], int] = {}
        """``count_seq`` of each ``(channel, epoch, seq)`` any device saw (for the unread formula)."""
        self.non_counting: set[str] = set()
        """cmids of sends that are not texts (they do not move the sender's read marker)."""
        self.keep_events = False
        """Devices keep every event (rich-message scenarios): :meth:`finish` then records each
        device's fold and history's state of every message for the checker."""
        self.with_outbox: set[SimDevice] = set()
        self.sync_sem = asyncio.Semaphore(self.cfg.sync_concurrency)
        self.stopping = False
        self.recording = True
        self._tag = secrets.token_hex(3)
        self._cmids = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.calls: set[asyncio.Task[Any]] = set()
        self.failures: Counter[str] = Counter()
        self.stops: Counter[str] = Counter()
        self.connect_ms: list[tuple[float, float]] = []
        self.resumed: list[tuple[float, str]] = []
        self.connected_log: list[tuple[float, str]] = []
        self.recent_ack_ms: list[float] = []
        self.recent_deliver_ms: list[float] = []
        self.n_sent = self.n_acked = self.n_live = self.n_sync_deliveries = self.n_events = 0
        self.n_online = self.connecting = self.n_syncs = self.n_fills = self.n_republished = 0
        self.n_unavailable = self.gaps_seen = self.unexpected_closes = self.refused_subscriptions = 0
        self.gap_notices = 0
        """Gap notices received: the broker dropped messages for a device that fell behind."""
        self.sync_failures = self.relogins = self.badge_failures = 0
        self.push_tokens: dict[str, str] = {}

    async def __aenter__(self) -> Fleet:
        self.spawn(self._retry_loop(), "fleet.retry")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.recording = False
        self.stopping = True
        await asyncio.gather(*(d.close() for d in self.devices.values()), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()

    def call_later_api(self, coro: Any, name: str) -> None:
        """An API call made on a device's behalf in the background (a read marker); awaited before the final sync."""
        task = self.spawn(coro, name)
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def next_cmid(self) -> str:
        self._cmids += 1
        return f"{self._tag}.{self._cmids}"

    # -- population ------------------------------------------------------------------------------

    def add(self, user: UserSpec, device_id: str, channels: Iterable[str]) -> SimDevice:
        device = SimDevice(self, user, device_id, channels)
        self.devices[device.name] = device
        self.users[user.user_id] = user
        self.obs.devices_of.setdefault(user.user_id, []).append(device.name)
        return device

    def set_members(self, channel: str, members: Iterable[str]) -> None:
        self.obs.members[channel] = set(members)

    async def init_cursors(self, positions: dict[str, tuple[int, int]]) -> None:
        """Give every device the channels' current ``(epoch, last_seq)`` (as an app that loaded them)."""
        for d in self.devices.values():
            for c, st in d.channels.items():
                if c in positions:
                    st.epoch, st.last_seq = positions[c]
                    st.known = True

    async def connect(self, devices: Iterable[SimDevice], rate: float, timeout_s: float = 600) -> float:
        """Bring ``devices`` online at ``rate`` per second (0: all at once) and wait until every one
        is connected, subscribed and synced (or stopped). Returns the seconds it took."""
        devices = list(devices)
        t0 = time.monotonic()
        for i, d in enumerate(devices):
            if rate:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            d.start()
        await self.wait_ready(devices, timeout_s)
        return time.monotonic() - t0

    async def wait_ready(self, devices: Iterable[SimDevice], timeout_s: float, *, since: float = 0.0) -> bool:
        """Wait until every device is connected, subscribed and synced (after ``since``), or has
        stopped, or is meant to be offline."""
        devices = list(devices)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all((d.ready and (d.resumed_at or 0.0) >= since) or d.stopped is not None or not d.want_online
                   for d in devices):
                return True
            await asyncio.sleep(0.1)
        return False

    def on_resumed(self, device: SimDevice, now: float) -> None:
        self.resumed.append((now, device.name))

    # -- background loops ------------------------------------------------------------------------

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for d in list(self.with_outbox):
                d.retry_unacked(now)

    # -- push ------------------------------------------------------------------------------------

    async def register_push(self, device: SimDevice, platform: str) -> None:
        token = (f"sim-{platform}-{secrets.token_hex(12)}" if platform == "fcm" else secrets.token_hex(32))
        device.push_token = token
        self.push_tokens[token] = device.name
        await self.http.call("PUT", "/v1/me/push", await device._token_value(),
                             json={"platform": platform, "token": token})

    def record_push(self, token: str, payload: dict[str, Any], t: float) -> None:
        """A push the stand-in received (called from its thread through :meth:`watch_pushes`)."""
        device = self.push_tokens.get(token)
        if device is None:
            return
        data = payload.get("message", {}).get("data") or payload
        self.obs.pushes.append(Push(device, str(data.get("channel", "")), str(data.get("id", "")), t))

    def watch_pushes(self, standins: Any) -> None:
        """Timestamp every push the stand-ins receive, as it arrives."""
        loop = asyncio.get_running_loop()
        for recorder, token_of in ((standins.fcm.recorder, lambda r: r.token),
                                   (standins.apns.recorder, lambda r: r.token)):
            original = recorder.record

            def record(item: Any, original: Any = original, token_of: Any = token_of) -> None:
                original(item)
                if item.status == 200:
                    t = time.monotonic()
                    loop.call_soon_threadsafe(self.record_push, token_of(item), item.payload, t)

            recorder.record = record

    # -- the end of a run ------------------------------------------------------------------------

    async def drain_outboxes(self, timeout_s: float) -> bool:
        """Wait until every device that wants to be online has all its sends acked."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(d.outbox for d in self.devices.values() if d.want_online and d.stopped is None):
                return True
            await asyncio.sleep(0.2)
        return False

    async def settle(self, quiet_s: float, timeout_s: float) -> float:
        """Wait until no device has received anything live for ``quiet_s`` (the system has worked
        off its backlog); returns the seconds waited."""
        t0 = time.monotonic()
        seen, since = self.n_live + self.n_acked, time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            await asyncio.sleep(min(0.5, quiet_s))
            now_seen = self.n_live + self.n_acked
            if now_seen != seen:
                seen, since = now_seen, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                break
        return time.monotonic() - t0

    async def finish(self, quiet_s: float, *, badge_sample: int = 200, concurrency: int = 32,
                     drain_timeout_s: float = 300.0) -> dict[str, Any]:
        """Wait for every outbox to empty and for the system to go quiet, then a final sync on
        every device, presence and badges as seen at the end."""
        t0 = time.monotonic()
        drained = await self.drain_outboxes(drain_timeout_s)
        if self.calls:
            await asyncio.gather(*list(self.calls), return_exceptions=True)
        t_drained = time.monotonic()
        settled = await self.settle(quiet_s, drain_timeout_s)
        # Connections are now frozen for the record: what is open at this point stays "open".
        devices = list(self.devices.values())

        async def final(d: SimDevice) -> None:
            try:
                await d._sync_retrying()
            finally:
                for c, st in d.channels.items():
                    if st.held and not st.filling:
                        await d._fill(c)

        sem = asyncio.Semaphore(concurrency)

        async def bounded(d: SimDevice) -> None:
            async with sem:
                await final(d)

        await asyncio.gather(*(bounded(d) for d in devices))
        now = time.monotonic()
        for d in devices:
            for user in d.watch:
                theirs = [self.devices[n] for n in self.obs.devices_of.get(user, [])]
                actual = "online" if any(x.client is not None and x.client.connected for x in theirs) else "offline"
                # Nothing received means nothing retained: the app shows the user offline.
                self.obs.presence.append(PresenceSeen(d.name, user, d.presence.get(user, "offline"), actual))
        await self._badges(self.rng.sample(devices, min(badge_sample, len(devices))), now)
        if self.keep_events:
            await self._states(devices)
        self.recording = False
        return {"outboxes_drained": drained, "drain_s": round(t_drained - t0, 2), "quiet_s": round(settled, 2),
                "final_sync_s": round(time.monotonic() - t0 - settled - (t_drained - t0), 2),
                "unacked_in_offline_outboxes": sum(len(d.outbox) for d in devices)}

    async def _badges(self, devices: list[SimDevice], now: float) -> None:
        """``GET /v1/me/inbox`` on a sample of devices, beside the formula over what the fleet knows."""
        async def one(d: SimDevice) -> None:
            doc = await self.http.call("GET", "/v1/me/inbox", await d._token_value())
            for entry in doc["channels"]:
                c = entry["channel_id"]
                if c not in d.channels:
                    continue
                key = (d.user.user_id, c)
                read = min(max(self.read_marks.get(key, 0), self.own_seq.get(key, 0)), int(entry["last_seq"]))
                epoch = int(entry["epoch"])

                def count(seq: int) -> int:  # texts only count (docs/protocol.md, *Unread counts*)
                    return self.count_at.get((c, epoch, seq), seq) if seq else 0  # noqa: B023

                expected = max(0, count(int(entry["last_seq"])) - count(read))
                self.obs.badges.append(Badge(d.name, c, int(entry["unread"]), expected, now))

        sem = asyncio.Semaphore(16)

        async def bounded(d: SimDevice) -> None:
            async with sem:
                try:
                    await one(d)
                except ApiError as exc:
                    self.badge_failures += 1
                    logger.warning("%s: inbox failed: %s", d.name, exc)

        await asyncio.gather(*(bounded(d) for d in devices))

    async def _states(self, devices: list[SimDevice]) -> None:
        """History's state of every message of each channel (read as one member), and each
        device's fold of the events it holds, for that member's eyes."""
        by_channel: dict[str, list[SimDevice]] = {}
        for d in devices:
            for c in d.channels:
                by_channel.setdefault(c, []).append(d)

        async def one(channel: str, holders: list[SimDevice]) -> None:
            viewer = holders[0]
            token = await viewer._token_value()
            states: dict[int, Any] = {}
            after, last = 0, 0
            while True:
                doc = await self.http.call("GET", f"/v1/channels/{channel}/messages", token,
                                           params={"after": after, "limit": 200})
                for m in doc["messages"]:
                    if m["state"] is not None:
                        states[m["seq"]] = m["state"]
                    after = m["seq"]
                last = int(doc["last_seq"])
                if not doc["has_more"]:
                    break
            self.obs.history_states[channel] = StatesSeen(viewer.user.user_id, last, states)
            for d in holders:
                held = d.channels[channel].events
                folded = fold.fold(held[s] for s in sorted(held))
                self.obs.device_states[(d.name, channel)] = StatesSeen(
                    viewer.user.user_id, max(held, default=0) if len(held) == max(held, default=0) else -1,
                    {seq: msgspec.to_builtins(m.out(viewer.user.user_id)) for seq, m in folded.messages.items()})

        sem = asyncio.Semaphore(8)

        async def bounded(channel: str, holders: list[SimDevice]) -> None:
            async with sem:
                try:
                    await one(channel, holders)
                except ApiError as exc:
                    logger.warning("history of %s failed: %s", channel, exc)

        await asyncio.gather(*(bounded(c, h) for c, h in by_channel.items()))

    def counters(self) -> dict[str, int]:
        return {"online": self.n_online, "connecting": self.connecting, "sent": self.n_sent, "acked": self.n_acked,
                "live": self.n_live, "sync_deliveries": self.n_sync_deliveries, "syncs": self.n_syncs,
                "fills": self.n_fills, "republished": self.n_republished, "unavailable": self.n_unavailable,
                "gaps_seen": self.gaps_seen, "gap_notices": self.gap_notices,
                "unexpected_closes": self.unexpected_closes,
                "refused_subscriptions": self.refused_subscriptions, "sync_failures": self.sync_failures,
                "relogins": self.relogins, "user_events": self.n_events, "badge_failures": self.badge_failures,
                "stopped": sum(self.stops.values())}

"""Settings for every mqchat process: one frozen, validated tree, loaded once at the entry point.

Sources, highest priority first: keyword overrides (command-line flags), environment variables
(``MQCHAT_`` prefix, ``__`` between levels: ``MQCHAT_MQTT__PORT=1884``), a TOML file named by
``MQCHAT_CONFIG`` or ``--config``, then the defaults below. ``mqchat config`` prints the result.
Every field is documented in docs/configuration.md, generated from the descriptions here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mqchat.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttSettings(_Section):
    host: str = Field("127.0.0.1", description="Address of the MQTT broker (the embedded broker binds here).")
    port: int = Field(1883, ge=1, le=65535, description="MQTT over TCP port.")
    ws_port: int = Field(8083, ge=1, le=65535, description="MQTT over WebSocket port (path /mqtt).")
    public_host: str | None = Field(
        None, description="Host name advertised to devices at login; defaults to `host`."
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="Keep-alive of mqchat's own service clients.")
    broker: Literal["embedded", "external"] = Field(
        "embedded", description="Which broker carries MQTT. `embedded`: `python -m broker`, whose plugin writes "
        "the presence leases. `external` (Mosquitto, EMQX, VerneMQ, ...; `mqchat up --broker` sets it): the "
        "workers' presence ingester writes them from the devices' status publishes and last wills, and login "
        "asks devices to re-publish their status every third of `broker.presence_lease_ms`."
    )

    @property
    def advertised_host(self) -> str:
        return self.public_host or self.host


#: Words of the placeholder values in deploy/'s examples: a deployment that copied an example as it
#: is would sign tokens with a publicly known key, so such a value is refused at start.
EXAMPLE_SECRET_MARKERS = ("change-me", "changeme", "replace-with", "replace_with", "example", "placeholder",
                          "your-secret")


def refuse_example_secret(name: str, value: SecretStr | None) -> None:
    """Raise ``ValueError`` when ``value`` is one of the documentation's example secrets."""
    if value is None:
        return
    lowered = value.get_secret_value().lower()
    if any(marker in lowered for marker in EXAMPLE_SECRET_MARKERS):
        raise ValueError(f"{name} is an example value from the documentation; generate one: "
                         "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'")


class HttpSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    port: int = Field(8080, ge=1, le=65535, description="HTTP API port.")
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20, description="Largest request body accepted; "
                                "a larger one is answered 413 `body_too_large` before it is read.")
    cors_origins: tuple[str, ...] = Field((), description="Origins of browser apps allowed to call the API "
                                          "(e.g. `[\"https://chat.example.com\"]`, or `[\"*\"]`); empty: same "
                                          "origin only.")
    hooks_secret: SecretStr | None = Field(None, description="Secret an external broker presents to the auth hooks "
                                           "(`/hooks/...`) as `Authorization: Bearer` or `?secret=`. Unset: the "
                                           "hooks are off (404).")
    metrics_token: SecretStr | None = Field(None, description="Bearer token for `/metrics` on the API port. Unset: "
                                            "`/metrics` there answers loopback clients only.")
    trusted_proxies: tuple[str, ...] = Field((), description="Addresses of reverse proxies whose "
                                             "`X-Forwarded-For` names the client (rate limits count per client "
                                             "address); empty: the peer address is the client.")
    send_timeout_s: float = Field(10.0, gt=0, le=120, description="How long `POST /v1/channels/{id}/messages` "
                                  "waits for the bridge's ack before answering 504 `ack_timeout` (retry with the "
                                  "same cmid).")

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
                raise ValueError(f"CORS origin {origin!r}: expected '*' or scheme://host[:port] with no path")
        return value

    @field_validator("hooks_secret", "metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (use a random string)")
        refuse_example_secret("this secret", value)
        return value


class AuthSettings(_Section):
    secret: SecretStr | None = Field(
        None,
        description="HS256 signing secret (at least 32 bytes). Unset: a random one is kept in "
        "`<data_dir>/jwt-secret`.",
    )
    public_key_file: Path | None = Field(
        None,
        description="PEM public key of an external token issuer (RS256/ES256). When set, tokens "
        "are verified with it and this server does not issue device tokens.",
    )
    algorithms: tuple[Literal["HS256", "RS256", "ES256"], ...] = Field(
        ("HS256",), min_length=1, description="Accepted JWT algorithms."
    )
    audience: str = Field("mqchat", min_length=1, description="Required `aud` claim.")
    issuer: str = Field("mqchat", min_length=1, description="Required `iss` claim.")
    service_token: SecretStr | None = Field(
        None,
        description="Token mqchat's own processes (bridge, API) connect with when this deployment "
        "cannot sign (external issuer). Must carry `role: service`.",
    )
    token_ttl_s: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Lifetime of issued device access "
                             "tokens. A device renews its token with its refresh token before it ends (`POST "
                             "/v1/token/refresh`) and hands the new one to the broker in-band (docs/protocol.md); "
                             "the embedded broker closes a connection whose token has expired.")
    refresh_ttl_s: int = Field(30 * 24 * 3600, ge=300, le=365 * 24 * 3600, description="A refresh token "
                               "family (one device's login) ends this long after its last use; every use "
                               "rotates the token and restarts the period.")
    leeway_s: int = Field(30, ge=0, le=300, description="Clock skew tolerated on `exp`/`nbf`.")

    @model_validator(mode="after")
    def _check(self) -> AuthSettings:
        if self.secret is not None and len(self.secret.get_secret_value().encode()) < 32:
            raise ValueError("auth.secret must be at least 32 bytes")
        for name in ("secret", "service_token"):
            refuse_example_secret(f"auth.{name}", getattr(self, name))
        asymmetric = {"RS256", "ES256"} & set(self.algorithms)
        if asymmetric and self.public_key_file is None:
            raise ValueError(f"auth.algorithms {sorted(asymmetric)} need auth.public_key_file")
        return self


class BrokerSettings(_Section):
    membership_cache_s: float = Field(
        30.0, ge=0, le=3600, description="How long the broker (and the API's broker hooks) trust a cached "
        "user's channel list while they follow the access invalidation feed on Redis (`acl:invalidations`): "
        "a safety net, since every directory change that can change access drops the entries it concerns "
        "at once (docs/permissions.md)."
    )
    membership_cache_unfed_s: float = Field(
        1.0, ge=0, le=60, description="How long a cached channel list is trusted without the invalidation "
        "feed (no `redis.url`, or while Redis cannot be read): membership changes then take effect within "
        "this time, without a reconnect. Losing the feed, and getting it back, drops every entry."
    )
    max_connections: int = Field(100_000, ge=0, description="Connection limit per listener (0 = none); a "
                                 "connection over it is closed at once. Keep the process's open-file limit "
                                 "above the sum over listeners.")
    max_connections_per_user: int = Field(20, ge=0, le=10_000, description="Connections one user may hold at "
                                          "once, over all devices (0 = no limit); a CONNECT over it is refused "
                                          "with CONNACK 0x03 (server unavailable). Services are exempt.")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, le=365 * 24 * 3600, description="A persistent session "
                                  "(clean session 0) whose client stays away this long is dropped with its "
                                  "queue (0 = never).")
    retained_max_count: int = Field(1_000_000, ge=0, description="Retained messages the broker keeps (0 = no "
                                    "limit); a retained PUBLISH to a new topic beyond it is delivered but not kept.")
    retained_max_bytes: int = Field(256 << 20, ge=0, description="Total payload bytes of retained messages "
                                    "(0 = no limit); beyond it a retained PUBLISH is delivered but not kept.")
    connect_timeout_s: float = Field(10.0, gt=0, le=300, description="A connection that sends no CONNECT "
                                     "within this time is closed.")
    drain_s: float = Field(0.0, ge=0, le=600, description="On SIGTERM, close client connections in even "
                           "batches over this many seconds before stopping, so clients of a replaced node "
                           "reconnect elsewhere gradually (0: all at once).")
    presence_lease_ms: int = Field(
        30_000, ge=1_000, le=600_000, description="Presence lease of a device connection; refreshed at a third "
        "of it (by the embedded broker; with `mqtt.broker = external`, by the device's status heartbeat). "
        "After a broker crash, its devices are offline within this time."
    )
    max_packet_bytes: int = Field(
        256 * 1024, ge=1024, le=256 * 1024 * 1024, description="Largest MQTT packet a client may send; a "
        "bigger one closes its connection (MQTT 3.1.1 lets a server close on any packet it will not take)."
    )
    max_inflight: int = Field(
        100, ge=1, le=65_535, description="QoS 1/2 messages sent to one client and not yet acknowledged; "
        "further messages wait in its queue."
    )
    max_queued: int = Field(
        1_000, ge=0, le=1_000_000, description="Messages queued for one client (offline persistent session, "
        "or waiting behind its in-flight window); beyond this the oldest QoS 0 and then the oldest are dropped."
    )
    publish_rate_per_s: float = Field(
        200.0, ge=0, description="PUBLISH packets a device may send per second, sustained (0 = no limit); a "
        "faster client is slowed down (the broker stops reading its socket), never disconnected. Services "
        "(bridge, workers) and the bare --no-auth broker have no limit."
    )
    publish_burst: int = Field(
        1_000, ge=1, description="PUBLISH packets a client may send in a burst above the sustained rate."
    )
    tls_port: int | None = Field(None, ge=1, le=65535, description="MQTT over TLS (`mqtts`) port of the "
                                 "embedded broker, on `mqtt.host`; unset: no TLS listener. Needs `tls_cert_file` "
                                 "and `tls_key_file` (`mqchat up --tls-dev` makes a development pair).")
    wss_port: int | None = Field(None, ge=1, le=65535, description="MQTT over WebSocket over TLS (`wss`, path "
                                 "/mqtt) port of the embedded broker; unset: none. Same certificate.")
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain for the TLS listeners.")
    tls_key_file: Path | None = Field(None, description="PEM private key for the TLS listeners (keep it 0600).")

    @model_validator(mode="after")
    def _check_tls(self) -> BrokerSettings:
        if (self.tls_port or self.wss_port) and (self.tls_cert_file is None or self.tls_key_file is None):
            raise ValueError("broker.tls_port / broker.wss_port need broker.tls_cert_file and broker.tls_key_file")
        return self


class BridgeSettings(_Section):
    worker_id: int = Field(0, ge=0, le=1023, description="Snowflake worker id; unique per bridge.")
    batch_max: int = Field(
        256, ge=1, le=10_000, description="Most sends persisted in one transaction (group commit)."
    )
    queue_max: int = Field(
        10_000, ge=1, description="Sends buffered before the bridge stops reading from the broker."
    )
    drain_timeout_s: float = Field(10.0, ge=0, description="On shutdown, time allowed to finish sends in flight.")
    coordinate: bool = Field(
        False, description="Run several bridges: each orders only the channels of the partitions it holds a "
        "Redis lease on (needs redis.url). Off: this bridge orders every channel."
    )
    shared_intake: bool = Field(
        True, description="Take sends through the shared subscription `$share/bridges/in/+/+/+`: each send "
        "reaches one bridge instead of all (the embedded broker, Mosquitto >= 2, EMQX, VerneMQ, HiveMQ support "
        "it for MQTT 3.1.1 clients). With `bridge.coordinate`, a send that reaches a bridge not owning its channel "
        "is forwarded to the owner. Off: the plain subscription `in/+/+/+` (brokers without `$share`)."
    )
    partitions: int = Field(64, ge=1, le=4096, description="Channel partitions shared out between bridges "
                            "(the same on every bridge).")
    lease_ms: int = Field(3000, ge=500, le=60_000, description="Partition lease lifetime; a dead bridge's "
                          "channels move to the others after it.")
    mqtt_client: Literal["lean", "aiomqtt"] = Field(
        "lean", description="MQTT client of the bridge's broker connection: `lean` (`mqchat.mqtt.client`, an "
        "asyncio protocol on the shared codec: a batch's publishes leave in one write) or `aiomqtt` (paho; "
        "kept for comparison, `python -m bench.pipeline --bridge-client`)."
    )


class StoreSettings(_Section):
    backend: Literal["sqlite", "cassandra"] = Field(
        "sqlite", description="Message store: embedded SQLite, or a Cassandra/ScyllaDB cluster. The directory "
        "(users, servers, channels, members) is chosen by `directory.url`."
    )


class DirectorySettings(_Section):
    url: str | None = Field(
        None, description="Where users, servers, roles, channels and memberships live. Unset: the SQLite file "
        "`directory.db` in `data_dir` (every process on one host). `postgresql://user[:password]@host[:port]/db`: "
        "PostgreSQL, shared by processes on any host (apply the schema first with `mqchat migrate`). "
        "Cassandra keeps messages only.")
    pool_min: int = Field(1, ge=0, le=100, description="PostgreSQL: connections each process keeps open.")
    pool_max: int = Field(10, ge=1, le=500, description="PostgreSQL: the most connections one process opens; a "
                          "directory call waits for a free one up to 10 s, then fails as temporarily unavailable.")

    @model_validator(mode="after")
    def _check(self) -> DirectorySettings:
        if self.url is not None and not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"directory.url {self.url!r}: expected postgresql://user@host[:port]/database "
                             "(or unset for the embedded SQLite directory)")
        if self.pool_min > self.pool_max:
            raise ValueError("directory.pool_min must not exceed directory.pool_max")
        return self


class CassandraSettings(_Section):
    hosts: tuple[str, ...] = Field(("127.0.0.1",), min_length=1, description="Contact points.")
    port: int = Field(9042, ge=1, le=65535, description="CQL native protocol port.")
    keyspace: str = Field("mqchat", pattern=r"^[a-z][a-z0-9_]{0,47}$", description="Keyspace.")
    local_dc: str | None = Field(None, description="Local data centre for DC-aware routing (required with "
                                 "more than one DC).")
    replication_factor: int = Field(3, ge=1, le=9, description="Replication factor per DC, used by migrations.")
    consistency: Literal["LOCAL_QUORUM", "QUORUM", "LOCAL_ONE", "ONE", "ALL"] = Field(
        "LOCAL_QUORUM", description="Consistency level of reads and writes.")
    request_timeout_s: float = Field(5.0, gt=0, le=120, description="Client-side timeout of one request.")
    protocol_version: int = Field(
        4, ge=3, le=5, description="CQL native protocol version, pinned so connecting needs no negotiation "
        "(v4: Cassandra 2.2+ and ScyllaDB).")
    speculative_delay_s: float = Field(
        0.1, ge=0, le=10, description="A read not answered within this time is also sent to the next replica "
        "(reads only; 0 = never).")


class RedisSettings(_Section):
    url: str | None = Field(
        None, description="Redis URL: redis://host:port/db for one server, redis+cluster://host:port,host:port "
        "(rediss+cluster:// for TLS) for a Redis Cluster (docs/redis.md). Unset: `mqchat up` runs a private "
        "redis-server in the data directory."
    )
    key_prefix: str = Field("mqchat:", description="Prefix of every key mqchat writes (no braces: they are "
                            "Redis Cluster hash tags).")
    max_connections: int = Field(
        64, ge=1, le=10_000, description="Connections each process opens to one Redis server (to each cluster "
        "node) at most. A command issued while all are busy waits for one (up to `redis.pool_timeout_s`; a "
        "cluster client cannot wait and fails at once), so a burst (10,000 devices connecting at once) queues "
        "instead of exhausting Redis' `maxclients`."
    )
    pool_timeout_s: float = Field(
        5.0, gt=0, le=300, description="How long a Redis command waits for a free pooled connection before "
        "failing as storage unavailable."
    )

    @field_validator("key_prefix")
    @classmethod
    def _no_hash_tag(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError(f"key prefix {value!r} must not contain braces (Redis Cluster hash tags)")
        return value


class PresenceSettings(_Section):
    shared_ingest: bool = Field(
        False, description="With `mqtt.broker = external`. Off (the default): the presence leader alone "
        "ingests the device status publishes, on one plain `presence/+/+` subscription with a persistent "
        "session, so they are applied in the order the broker received them and a new leader resumes "
        "where the last one stopped. On: every workers instance subscribes to "
        "`$share/presence/presence/+/+` and they split the publishes (more ingest throughput; two "
        "statuses of one user handled by two instances can be applied out of order until the next "
        "heartbeat)."
    )
    leader_lease_ms: int = Field(
        5_000, ge=500, le=120_000, description="Lease of the workers instance that runs the presence publisher "
        "and lease sweeper (one at a time, fenced); renewed at a third of it. If that instance dies, another "
        "takes over within this time."
    )


class PushSettings(_Section):
    enabled: bool = Field(True, description="Run the push fan-out worker and the senders in the workers process.")
    privacy: bool = Field(
        False, description="Privacy mode: notifications never carry message text (for end-to-end encrypted apps); "
        "a device can also turn previews off for itself when it registers its token.")
    fanout_batch: int = Field(
        500, ge=1, le=10_000, description="Members decided per batch of pipelined Redis reads in a channel's fan-out.")
    send_batch: int = Field(256, ge=1, le=10_000, description="Send jobs a sender takes from the stream at once.")
    claim_idle_s: float = Field(
        30.0, ge=0.1, le=3600, description="A job read but not acknowledged for this long is taken over from its "
        "(presumed dead) worker with XAUTOCLAIM.")
    request_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Timeout of one request to FCM or APNs, OAuth token requests included.")
    fcm_concurrency: int = Field(32, ge=1, le=1000, description="Most FCM requests in flight per worker.")
    apns_concurrency: int = Field(64, ge=1, le=1000, description="Most APNs requests in flight per worker.")
    backoff_base_s: float = Field(1.0, gt=0, le=3600, description="First retry delay of a temporary failure; "
                                  "doubles per attempt, with full jitter.")
    backoff_cap_s: float = Field(300.0, gt=0, le=86_400, description="Longest delay between two attempts "
                                 "(a provider's longer `Retry-After` is still honoured).")
    give_up_after_s: float = Field(
        3600.0, gt=0, le=7 * 86_400, description="A push still failing this long after its first attempt goes "
        "to the dead-letter stream instead of being retried (a notification hours late is noise).")
    record_file: str = Field(
        "push-recorded.jsonl", description="Without provider credentials, pushes are recorded (one JSON line "
        "each, token shortened) in this file under `data_dir`, and logged.")
    fcm_service_account_file: Path | None = Field(
        None, description="Google service account JSON for FCM HTTP v1. Unset: FCM pushes are only recorded.")
    fcm_project_id: str | None = Field(None, description="FCM project id; defaults to the service account's.")
    fcm_endpoint: str = Field(
        "https://fcm.googleapis.com", description="FCM API base URL. Override for tests or staging only.")
    apns_key_file: Path | None = Field(
        None, description="APNs provider token signing key (.p8, ES256). Unset: APNs pushes are only recorded.")
    apns_key_id: str | None = Field(None, description="Key id of `apns_key_file`.")
    apns_team_id: str | None = Field(None, description="Apple developer team id.")
    apns_topic: str | None = Field(
        None, description="Default APNs topic (app bundle id), used when a device registered no bundle id.")
    apns_sandbox: bool = Field(False, description="Use the APNs development environment.")
    apns_host: str | None = Field(
        None, description="APNs host override (`host` or `host:port`). For tests or staging only.")
    apns_ca_file: Path | None = Field(
        None, description="Extra CA certificate (PEM) trusted for APNs, e.g. a stand-in's self-signed one. "
        "For tests or staging only.")

    @model_validator(mode="after")
    def _check(self) -> PushSettings:
        if self.apns_key_file is not None and not (self.apns_key_id and self.apns_team_id):
            raise ValueError("push.apns_key_file needs push.apns_key_id and push.apns_team_id")
        return self


class SearchSettings(_Section):
    """Message search (docs/search.md): the message log, the indexer and `GET /v1/search`."""

    enabled: bool = Field(True, description="Log message changes for search (bridge), run the search indexer "
                          "(workers) and serve `GET /v1/search` (API). Needs `redis.url`.")
    url: str | None = Field(
        None, description="Where the search index lives: `sqlite:///<path>` (SQLite FTS5, one host) or "
        "`postgresql://user[:password]@host[:port]/db` (PostgreSQL full-text search). Unset: the SQLite file "
        "`search.db` in `data_dir`.")
    language: str = Field("english", pattern=r"^[a-z_]{1,63}$", description="PostgreSQL only: the stemming "
                          "language, fixed when the index is created (change it: drop the index and reindex).")
    batch: int = Field(500, ge=1, le=10_000, description="Log entries the indexer reads and indexes at once.")
    claim_idle_s: float = Field(
        30.0, ge=0.1, le=3600, description="A log entry read but not acknowledged for this long is taken over "
        "from its (presumed dead) indexer with XAUTOCLAIM.")

    def index_url(self, data_dir: Path) -> str:
        """The configured index URL, or the embedded default under ``data_dir``."""
        from mqchat.search.factory import default_url

        return self.url or default_url(data_dir)


class RateLimitSettings(_Section):
    """HTTP rate limits, kept in Redis so they hold across API instances (docs/security.md).

    Each rule is ``N/period`` (``30/1m``, ``10/10m``, ``5/s``, ``20/1h``): ``N`` requests at once,
    then one every ``period / N``. A refused request gets 429 ``rate_limited`` with ``Retry-After``.
    """

    enabled: bool = Field(True, description="Off only for loopback benchmarks and load tests, explicitly.")
    login_per_ip: str = Field("30/1m", description="Login attempts per client address.")
    login_failures_per_account: str = Field("10/10m", description="Failed logins per username, from any "
                                            "address (a guessing attack spread over many addresses).")
    signup_per_ip: str = Field("20/1h", description="Accounts created per client address.")
    search_per_user: str = Field("30/1m", description="Searches (`GET /v1/search`, every page) per user.")
    refresh_per_ip: str = Field("60/1m", description="Token refreshes (`POST /v1/token/refresh`) per client "
                                "address.")
    uploads_per_user: str = Field("60/1m", description="Uploads started (`POST /v1/uploads`) per account; "
                                  "each reserves storage and a signed URL.")
    uploads_per_ip: str = Field("120/1m", description="Bodies sent to the `local` object store's signed upload "
                                "URLs (`PUT /v1/objects/...`, no token) per client address.")

    @field_validator("login_per_ip", "login_failures_per_account", "signup_per_ip", "search_per_user",
                     "refresh_per_ip", "uploads_per_user", "uploads_per_ip")
    @classmethod
    def _rule(cls, value: str) -> str:
        from mqchat.ratelimit import Rule

        Rule.parse(value)
        return value


#: Default of ``limits.max_channel_members`` (the directory's own default too).
DEFAULT_MAX_CHANNEL_MEMBERS = 500_000
#: Defaults of ``limits.max_channels_per_user`` and ``limits.max_servers_per_user`` (the directory's too).
DEFAULT_MAX_CHANNELS_PER_USER = 10_000
DEFAULT_MAX_SERVERS_PER_USER = 200
#: Default of ``limits.max_push_devices`` (``PushState.register``'s own default too).
DEFAULT_MAX_PUSH_DEVICES = 20


class LimitsSettings(_Section):
    """Bounds on what one channel or server may hold (docs/security.md)."""

    max_channel_members: int = Field(
        DEFAULT_MAX_CHANNEL_MEMBERS, ge=2, le=10_000_000, description="Most members of one channel. Group "
        "channels refuse more (409 `channel_full`); a server refuses more members (409 `server_full`), since "
        "its channels open to `@everyone` hold every member. Each member costs every message a push decision "
        "and a delivery: the default is the largest channel the capacity plan sizes for (docs/capacity.md).")
    max_channels_per_user: int = Field(
        DEFAULT_MAX_CHANNELS_PER_USER, ge=1, le=1_000_000, description="Direct and group channels one user may be a "
        "member of; creating or adding past it answers 409 `user_channels_full`. Bounds what one account can make "
        "the server keep, and what a user's inbox and sync read (others can add anyone to a group channel).")
    max_servers_per_user: int = Field(
        DEFAULT_MAX_SERVERS_PER_USER, ge=1, le=100_000, description="Servers one user may be a member of (owned ones "
        "included); creating or joining past it answers 409 `user_servers_full`.")
    max_push_devices: int = Field(
        DEFAULT_MAX_PUSH_DEVICES, ge=1, le=1000, description="Devices registered for push per user (each gets "
        "every push of the user's). Registering one more replaces the least recently registered.")


class OpsSettings(_Section):
    host: str = Field("127.0.0.1", description="Address of the operations endpoints (/metrics, /healthz, /readyz).")
    broker_port: int = Field(0, ge=0, le=65535, description="Operations port of the broker (0 = off).")
    bridge_port: int = Field(0, ge=0, le=65535, description="Operations port of the bridge (0 = off).")
    workers_port: int = Field(0, ge=0, le=65535, description="Operations port of the workers (0 = off). The "
                              "API serves the same endpoints on its own HTTP port. Under `mqchat up`, a process "
                              "whose port is 0 gets a free loopback port for the supervisor's health probe.")
    up_port: int = Field(0, ge=0, le=65535, description="Port where `mqchat up` serves its supervisor's /metrics "
                         "(children running, restarts by reason; 0 = off).")
    instance: int = Field(0, ge=0, le=15, description="Which of the workers instances `mqchat up --workers N` "
                          "runs this process is (0..N-1, set by `mqchat up`): instance 0 announces readiness in "
                          "`run/workers.ready`, instance i > 0 in `run/workers-{i}.ready`.")


class UpSettings(_Section):
    """How many of each scaled process ``mqchat up`` runs on this machine (``--bridges``, ``--workers``)."""

    bridges: int = Field(1, ge=1, le=16, description="Bridges `mqchat up` runs (`--bridges N`). With more than "
                         "one they coordinate (`bridge.coordinate` on; worker ids `bridge.worker_id` to "
                         "`bridge.worker_id + N - 1`; channels shared out by Redis partition leases) and share the "
                         "send intake. Bridge i serves its operations endpoints on `ops.bridge_port + i`, or on a "
                         "free loopback port when `ops.bridge_port` is 0.")
    workers: int = Field(1, ge=1, le=16, description="Workers instances `mqchat up` runs (`--workers N`), each with "
                         "its own MQTT client id and operations port (`ops.workers_port + i`, or a free loopback "
                         "port when 0): one at a time is the presence leader; push, search and (on an external "
                         "broker) presence ingest are shared between them.")


#: Content types uploads may have by default: each is recognised by its magic bytes
#: (``mqchat/objects/sniff.py``), so a client cannot label one kind of file as another.
DEFAULT_UPLOAD_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain",
                        "video/mp4", "audio/mpeg", "audio/ogg")


class ObjectsSettings(_Section):
    """Attachments: where uploaded files live and the limits the server enforces (docs/attachments.md)."""

    backend: Literal["local", "s3"] = Field(
        "local", description="Object store of uploads: `local` files under `data_dir` (served by the API through "
        "HMAC-signed URLs) or an S3-compatible service.")
    local_dir: str = Field("objects", min_length=1, description="Directory of the `local` backend, under `data_dir`.")
    public_url: str | None = Field(
        None, description="Base URL of the API as clients reach it (`https://chat.example.com`), put in front of "
        "the `local` backend's signed URLs. Unset: those URLs are paths (`/v1/objects/...`) that clients resolve "
        "against the API's base URL.")
    signing_secret: SecretStr | None = Field(
        None, description="Secret the `local` backend's URL signing key is derived from (at least 32 bytes). "
        "Unset: derived from the JWT signing secret (`auth.secret` or `<data_dir>/jwt-secret`).")
    max_upload_bytes: int = Field(25 << 20, ge=1, le=5 << 30, description="Largest upload accepted, in bytes.")
    allowed_types: tuple[str, ...] = Field(
        DEFAULT_UPLOAD_TYPES, min_length=1, description="Content types an upload may have; the stored bytes must "
        "match the type (magic bytes) before the upload can be sent.")
    upload_url_ttl_s: int = Field(900, ge=10, le=7 * 86_400, description="Lifetime of a signed upload URL.")
    download_url_ttl_s: int = Field(3600, ge=10, le=7 * 86_400, description="Lifetime of a signed download URL "
                                    "(history and `GET /v1/uploads/{id}/download` issue fresh ones).")
    unused_ttl_s: int = Field(86_400, ge=60, le=30 * 86_400, description="An upload not sent in a message within "
                              "this time is deleted (object, thumbnail and record) by the workers' cleanup loop.")
    cleanup_interval_s: float = Field(300.0, ge=1, le=86_400, description="How often the workers look for "
                                      "unused uploads past `unused_ttl_s`.")
    thumbnail_px: int = Field(320, ge=16, le=2048, description="Longest side of image thumbnails, in pixels.")
    max_image_pixels: int = Field(50_000_000, ge=1_000, le=1_000_000_000, description="Images with more pixels "
                                  "get no thumbnail (decompression-bomb guard; Pillow's `MAX_IMAGE_PIXELS`).")
    s3_bucket: str | None = Field(None, description="Bucket of the `s3` backend (must exist).")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, Ceph, R2, ...); unset: AWS.")
    s3_region: str = Field("us-east-1", min_length=1, description="Region of the bucket.")
    s3_access_key_id: str | None = Field(None, description="Access key; unset: the AWS SDK's default chain "
                                         "(environment, instance role).")
    s3_secret_access_key: SecretStr | None = Field(None, description="Secret key matching `s3_access_key_id`.")
    s3_path_style: bool = Field(False, description="Path-style URLs (`endpoint/bucket/key`), as most "
                                "self-hosted S3 servers need.")

    @field_validator("allowed_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ctype in value:
            if not re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", ctype):
                raise ValueError(f"content type {ctype!r}: expected type/subtype in lower case")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
            raise ValueError(f"public_url {value!r}: expected http(s)://host[:port][/path]")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _check(self) -> ObjectsSettings:
        if self.signing_secret is not None and len(self.signing_secret.get_secret_value().encode()) < 32:
            raise ValueError("objects.signing_secret must be at least 32 bytes")
        refuse_example_secret("objects.signing_secret", self.signing_secret)
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("objects.backend s3 needs objects.s3_bucket")
        return self


class Settings(BaseSettings):
    """Root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="MQCHAT_", env_nested_delimiter="__", frozen=True, extra="forbid",
    )

    data_dir: Path = Field(Path("data"), description="Where the embedded stores and the dev secret live.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_json: bool = Field(False, description="Log one JSON object per line.")
    mqtt: MqttSettings = MqttSettings()
    http: HttpSettings = HttpSettings()
    auth: AuthSettings = AuthSettings()
    broker: BrokerSettings = BrokerSettings()
    bridge: BridgeSettings = BridgeSettings()
    store: StoreSettings = StoreSettings()
    directory: DirectorySettings = DirectorySettings()
    cassandra: CassandraSettings = CassandraSettings()
    redis: RedisSettings = RedisSettings()
    ops: OpsSettings = OpsSettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    push: PushSettings = PushSettings()
    presence: PresenceSettings = PresenceSettings()
    objects: ObjectsSettings = ObjectsSettings()
    search: SearchSettings = SearchSettings()
    limits: LimitsSettings = LimitsSettings()
    up: UpSettings = UpSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file, when given, sits between the environment and the defaults.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @property
    def messages_db(self) -> Path:
        return self.data_dir / "messages.db"

    @property
    def directory_db(self) -> Path:
        return self.data_dir / "directory.db"


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        lines.append(f"  {where}: {err['msg']}")
    return "invalid settings:\n" + "\n".join(lines)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Load settings from overrides, the environment and an optional TOML file.

    Args:
        config_file: a TOML file; defaults to ``$MQCHAT_CONFIG`` when set.
        **overrides: top-level fields (sections as dicts) that win over every other source.

    Raises:
        ConfigError: a value is missing or invalid; the message names each field.
    """
    path = config_file or os.environ.get("MQCHAT_CONFIG")
    toml = Path(path) if path else None
    if toml is not None and not toml.is_file():
        raise ConfigError(f"config file {toml} does not exist")

    class _Loaded(Settings):
        model_config = SettingsConfigDict(toml_file=toml)

    try:
        loaded = _Loaded(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    return Settings.model_construct(**dict(loaded))


def reference_markdown() -> str:
    """The settings reference (docs/configuration.md), generated from the field descriptions."""
    lines = [
        "# Configuration",
        "",
        "Generated by `mqchat config --markdown`; do not edit by hand.",
        "",
        "Sources, highest priority first: command-line flags, environment variables (`MQCHAT_` prefix,",
        "`__` between levels), the TOML file named by `MQCHAT_CONFIG` or `--config`, the defaults below.",
        "",
        "| setting | environment variable | default | description |",
        "|---|---|---|---|",
    ]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
                continue
            key = f"{prefix}{name}"
            env = "MQCHAT_" + key.replace(".", "__").upper()
            default = info.default
            shown = "unset" if default is None else f"`{list(default) if isinstance(default, tuple) else default}`"
            lines.append(f"| `{key}` | `{env}` | {shown} | {info.description or ''} |")

    walk(Settings, "")
    return "\n".join(lines) + "\n"

-- The directory: users, direct and group channels with explicit members, servers and everything in
-- them. Same tables as SQLite's directory schema (mqchat/storage/sqlite.py); usernames are unique by
-- their casefolded form (username_key), computed by the application.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    username_key  TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    display_name  TEXT,
    avatar_url    TEXT
);

CREATE TABLE channels (
    channel_id TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
    name       TEXT,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    direct_key TEXT UNIQUE
);

CREATE TABLE members (
    channel_id TEXT NOT NULL REFERENCES channels (channel_id),
    user_id    TEXT NOT NULL,
    joined_ms  BIGINT NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, channel_id);

CREATE TABLE servers (
    server_id    TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    owner_id     TEXT NOT NULL,
    discoverable INTEGER NOT NULL,
    created_ms   BIGINT NOT NULL
);
CREATE INDEX servers_discoverable ON servers (discoverable, server_id);

CREATE TABLE server_members (
    server_id        TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
    user_id          TEXT NOT NULL,
    joined_ms        BIGINT NOT NULL,
    timeout_until_ms BIGINT,
    PRIMARY KEY (server_id, user_id)
);
CREATE INDEX server_members_by_user ON server_members (user_id, server_id);

CREATE TABLE roles (
    role_id   TEXT PRIMARY KEY,
    server_id TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
    name      TEXT NOT NULL,
    position  INTEGER NOT NULL,
    perms     BIGINT NOT NULL
);
CREATE INDEX roles_by_server ON roles (server_id);

CREATE TABLE member_roles (
    server_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    role_id   TEXT NOT NULL REFERENCES roles ON DELETE CASCADE,
    PRIMARY KEY (server_id, user_id, role_id),
    FOREIGN KEY (server_id, user_id) REFERENCES server_members ON DELETE CASCADE
);
CREATE INDEX member_roles_by_role ON member_roles (role_id);

CREATE TABLE server_channels (
    channel_id  TEXT PRIMARY KEY,
    server_id   TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    slow_mode_s INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX server_channels_by_server ON server_channels (server_id);

CREATE TABLE overwrites (
    channel_id TEXT NOT NULL REFERENCES server_channels ON DELETE CASCADE,
    target     TEXT NOT NULL CHECK (target IN ('role', 'member')),
    target_id  TEXT NOT NULL,
    allow      BIGINT NOT NULL,
    deny       BIGINT NOT NULL,
    PRIMARY KEY (channel_id, target, target_id)
);

CREATE TABLE bans (
    server_id  TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (server_id, user_id)
);

CREATE TABLE invites (
    code       TEXT PRIMARY KEY,
    server_id  TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
    channel_id TEXT REFERENCES server_channels ON DELETE CASCADE,
    creator    TEXT NOT NULL,
    max_uses   INTEGER,
    uses       INTEGER NOT NULL,
    expires_ms BIGINT,
    revoked    INTEGER NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX invites_by_server ON invites (server_id);

CREATE TABLE audit_log (
    entry_id   BIGSERIAL PRIMARY KEY,
    server_id  TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    details    TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX audit_by_server ON audit_log (server_id, entry_id);

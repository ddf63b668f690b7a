-- Apply one connection event and recompute the user's presence aggregate.
--
-- KEYS[1] the user's shard's leases zset   (prefix .. "presence:{p" .. shard .. "}:leases")
-- KEYS[2] user's conns hash                (prefix .. "presence:{p" .. shard .. "}:conns:" .. user)
-- KEYS[3] user's aggregate                 (prefix .. "presence:{p" .. shard .. "}:user:" .. user)
-- KEYS[4] the user's shard's change stream (prefix .. "presence:{p" .. shard .. "}:changes")
-- (all four share the shard's hash tag: one cluster slot)
-- ARGV[1] user id
-- ARGV[2] "{device}|{conn}"
-- ARGV[3] op: "connect" | "refresh" | "status" | "disconnect"
-- ARGV[4] status for connect/status: "online" | "away"
-- ARGV[5] lease expiry, ms
-- ARGV[6] now, ms
-- ARGV[7] stream MAXLEN
--
-- Returns the aggregate status after the event ("online" | "away" | "offline").
-- "refresh" and "status" only touch a connection that still exists, so they can never
-- resurrect a connection whose disconnect was already applied.

local user, member, op = ARGV[1], ARGV[2], ARGV[3]
local status, expiry, now = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local lease = user .. "|" .. member

if op == "connect" then
  redis.call("HSET", KEYS[2], member, status .. "|" .. expiry)
  redis.call("ZADD", KEYS[1], expiry, lease)
elseif op == "refresh" or op == "status" then
  local current = redis.call("HGET", KEYS[2], member)
  if current then
    local st = current:match("^(%a+)|")
    if op == "status" then st = status end
    redis.call("HSET", KEYS[2], member, st .. "|" .. expiry)
    redis.call("ZADD", KEYS[1], expiry, lease)
  end
elseif op == "disconnect" then
  redis.call("HDEL", KEYS[2], member)
  redis.call("ZREM", KEYS[1], lease)
end

-- aggregate over live connections
local agg = "offline"
local fields = redis.call("HGETALL", KEYS[2])
for i = 1, #fields, 2 do
  local st, exp = fields[i + 1]:match("^(%a+)|(%d+)$")
  if tonumber(exp) > now then
    if st == "online" then agg = "online" elseif agg == "offline" then agg = "away" end
  end
end

local previous = redis.call("HGET", KEYS[3], "status") or "offline"
if previous ~= agg then
  local ver = redis.call("HINCRBY", KEYS[3], "ver", 1)
  redis.call("HSET", KEYS[3], "status", agg, "last_seen", now)
  redis.call("XADD", KEYS[4], "MAXLEN", "~", ARGV[7], "*",
             "user", user, "status", agg, "last_seen", now, "ver", ver)
elseif agg ~= "offline" then
  redis.call("HSET", KEYS[3], "last_seen", now)
end
return agg

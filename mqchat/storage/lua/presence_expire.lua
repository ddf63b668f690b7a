-- Remove expired leases (crashed brokers, lost refreshes) and recompute affected users.
--
-- KEYS[1] the shard's leases zset    (shard prefix .. "leases")
-- KEYS[2] the shard's changes stream  (shard prefix .. "changes")
-- ARGV[1] shard prefix: prefix .. "presence:{p" .. shard .. "}:" (each user's conns and aggregate
--         keys are derived from it: same hash tag, so same cluster slot as KEYS)
-- ARGV[2] now, ms
-- ARGV[3] most leases to expire in one call
-- ARGV[4] stream MAXLEN
--
-- Returns the number of leases removed. Runs once per presence shard: every lease of the shard
-- belongs to a user of the shard, whose keys share the shard's hash tag.

local prefix, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, limit)
local users = {}
for _, lease in ipairs(expired) do
  local user, member = lease:match("^([^|]+)|(.+)$")
  redis.call("ZREM", KEYS[1], lease)
  local conns = prefix .. "conns:" .. user
  local current = redis.call("HGET", conns, member)
  if current then
    local exp = tonumber(current:match("|(%d+)$"))
    if exp <= now then redis.call("HDEL", conns, member) end
  end
  users[user] = true
end

for user, _ in pairs(users) do
  local conns = prefix .. "conns:" .. user
  local aggkey = prefix .. "user:" .. user
  local agg = "offline"
  local fields = redis.call("HGETALL", conns)
  for i = 1, #fields, 2 do
    local st, exp = fields[i + 1]:match("^(%a+)|(%d+)$")
    if tonumber(exp) > now then
      if st == "online" then agg = "online" elseif agg == "offline" then agg = "away" end
    end
  end
  local previous = redis.call("HGET", aggkey, "status") or "offline"
  if previous ~= agg then
    local ver = redis.call("HINCRBY", aggkey, "ver", 1)
    redis.call("HSET", aggkey, "status", agg, "last_seen", now)
    redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[4], "*",
               "user", user, "status", agg, "last_seen", now, "ver", ver)
  end
end
return #expired

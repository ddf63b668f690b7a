-- Remove expired leases (crashed brokers, lost refreshes) and recompute affected users.
--
-- KEYS[1] leases zset      (prefix .. "presence:leases")
-- KEYS[2] changes stream   (prefix .. "presence:changes")
-- ARGV[1] key prefix (the user's conns and aggregate keys are derived from it)
-- ARGV[2] now, ms
-- ARGV[3] most leases to expire in one call
-- ARGV[4] stream MAXLEN
--
-- Returns the number of leases removed. (Derived keys make this script single-instance Redis
-- only; a Redis Cluster deployment shards the lease set by user with hash tags.)

local prefix, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, limit)
local users = {}
for _, lease in ipairs(expired) do
  local user, member = lease:match("^([^|]+)|(.+)$")
  redis.call("ZREM", KEYS[1], lease)
  local conns = prefix .. "presence:conns:" .. user
  local current = redis.call("HGET", conns, member)
  if current then
    local exp = tonumber(current:match("|(%d+)$"))
    if exp <= now then redis.call("HDEL", conns, member) end
  end
  users[user] = true
end

for user, _ in pairs(users) do
  local conns = prefix .. "presence:conns:" .. user
  local aggkey = prefix .. "presence:user:" .. user
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

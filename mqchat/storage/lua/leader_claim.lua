-- Claim or renew a singleton's leader lease, with a fencing token.
--
-- KEYS[1] the lease hash (prefix .. "leader:" .. name): owner, token, expires_ms; no TTL, so the
--         token keeps counting across leaders
-- ARGV[1] owner id (unique per running instance)
-- ARGV[2] lease time, ms
--
-- Time is Redis's own (TIME), so the instances' clocks never disagree about expiry.
-- Returns {token, expires_ms}: token > 0 if the caller holds the lease afterwards (renewed: the
-- same token; newly taken: the previous token + 1), 0 if another owner holds it unexpired.

local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = redis.call("HGET", KEYS[1], "owner")
local expires = tonumber(redis.call("HGET", KEYS[1], "expires_ms") or "0")
local until_ms = now + tonumber(ARGV[2])
if owner == ARGV[1] and expires > now then
  redis.call("HSET", KEYS[1], "expires_ms", until_ms)
  return {tonumber(redis.call("HGET", KEYS[1], "token")), until_ms}
end
if owner and owner ~= ARGV[1] and expires > now then
  return {0, expires}
end
local token = redis.call("HINCRBY", KEYS[1], "token", 1)
redis.call("HSET", KEYS[1], "owner", ARGV[1], "expires_ms", until_ms)
return {token, until_ms}

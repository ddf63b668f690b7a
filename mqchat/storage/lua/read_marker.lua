-- Move a read marker forward, never back.
--
-- KEYS[1] the user's read hash (prefix .. "read:{" .. user .. "}")
-- KEYS[2] the user's mentions zset for the channel (prefix .. "mentions:{" .. user .. "}:" .. channel)
-- (both hash by the user's tag: one cluster slot)
-- ARGV[1] channel id
-- ARGV[2] epoch
-- ARGV[3] seq read up to
--
-- Callers pass the channel's current epoch only (the API refuses any other), so a marker of another
-- epoch, older or newer, is stale and is replaced whatever its seq: a bad marker cannot stick.
-- Returns {epoch, seq} of the marker after the call.

local current = redis.call("HGET", KEYS[1], ARGV[1])
local epoch, seq = tonumber(ARGV[2]), tonumber(ARGV[3])
if current then
  local ce, cs = current:match("^(%d+):(%d+)$")
  ce, cs = tonumber(ce), tonumber(cs)
  if ce == epoch and cs >= seq then
    return {ce, cs}
  end
end
redis.call("HSET", KEYS[1], ARGV[1], epoch .. ":" .. seq)
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", seq)
return {epoch, seq}

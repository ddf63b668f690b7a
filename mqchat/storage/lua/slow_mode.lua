-- Claim a sender's slow-mode slot in a channel.
--
-- KEYS[1] the slot (prefix .. "slow:" .. channel .. ":" .. user)
-- ARGV[1] cmid of the send
-- ARGV[2] the channel's slow-mode interval (ms): the slot's lifetime
--
-- Returns 0 when granted: the slot was free (it is now held by this cmid for the interval), or is
-- already held by this cmid (a client's retry of the same send). Otherwise the milliseconds until
-- the slot frees.

if redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2], "NX") then
  return 0
end
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return 0
end
local ttl = redis.call("PTTL", KEYS[1])
if ttl < 1 then
  ttl = 1
end
return ttl

-- Claim or renew a lease.
--
-- KEYS[1] the lease key (prefix .. "bridge:lease:" .. partition)
-- ARGV[1] owner id
-- ARGV[2] lease time, ms
--
-- Returns 1 if the caller holds the lease afterwards (newly claimed, or renewed because it was
-- already the owner), 0 if someone else holds it.

local current = redis.call("GET", KEYS[1])
if current == false or current == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 1
end
return 0

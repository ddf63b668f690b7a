-- Release a lease, only if the caller still holds it.
--
-- KEYS[1] the lease key
-- ARGV[1] owner id
--
-- Returns 1 if released, 0 otherwise.

if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0

-- Give up a leader lease at once (a clean shutdown), only if the caller holds it with this token.
--
-- KEYS[1] the lease hash (prefix .. "leader:" .. name)
-- ARGV[1] owner id
-- ARGV[2] fencing token the owner holds
--
-- Returns 1 if released, 0 otherwise. The token counter is kept, so the next leader's is higher.

if redis.call("HGET", KEYS[1], "owner") == ARGV[1] and redis.call("HGET", KEYS[1], "token") == ARGV[2] then
  redis.call("HSET", KEYS[1], "expires_ms", 0)
  return 1
end
return 0

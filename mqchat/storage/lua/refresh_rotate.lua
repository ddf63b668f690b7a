-- Rotate a refresh token: the presented one must be its family's current token.
--
-- KEYS[1] the family hash (prefix .. "auth:family:" .. family): user, device, current
-- ARGV[1] SHA-256 (hex) of the presented refresh token
-- ARGV[2] SHA-256 (hex) of its replacement
-- ARGV[3] the family's lifetime from now (s)
--
-- Returns {"ok", user, device} (rotated: only the replacement is valid now), {"unknown"} (no such
-- family: never issued, expired or revoked), or {"reused", user, device}: a token of the family
-- that is no longer current was presented, i.e. it was used before; the whole family is deleted.

local current = redis.call("HGET", KEYS[1], "current")
if not current then
  return {"unknown"}
end
local user = redis.call("HGET", KEYS[1], "user")
local device = redis.call("HGET", KEYS[1], "device")
if current ~= ARGV[1] then
  redis.call("DEL", KEYS[1])
  return {"reused", user, device}
end
redis.call("HSET", KEYS[1], "current", ARGV[2])
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[3]))
return {"ok", user, device}

-- One GCRA rate-limit decision (the arithmetic of mqchat/ratelimit.py's gcra(), atomically).
--
-- KEYS[1] the subject's TAT key (prefix .. "rl:" .. rule .. ":" .. subject), a string of ms
-- ARGV[1] period in ms
-- ARGV[2] limit (requests per period, all usable at once)
-- ARGV[3] cost: requests used up by this call; 0 only asks whether one would pass
--
-- The server's clock decides (TIME), so every API instance agrees whatever its own clock says.
-- Returns {allowed (1|0), retry_after_ms}. The key expires when the allowance is whole again.

local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period, limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local interval = period / limit
local stored = redis.call("GET", KEYS[1])
local tat = now
if stored then
  tat = math.max(tonumber(stored), now)
end
local probe = cost
if probe < 1 then
  probe = 1
end
local new_tat = tat + probe * interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
if cost > 0 then
  redis.call("SET", KEYS[1], string.format("%.3f", new_tat), "PX", math.max(1, math.ceil(new_tat - now)))
end
return {1, 0}

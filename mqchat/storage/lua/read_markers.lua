-- Move many read markers forward, never back: read_marker.lua once per item, in order.
--
-- KEYS[2i-1] item i's user's read hash (prefix .. "read:{" .. user .. "}")
-- KEYS[2i]   item i's user's mentions zset for the channel (prefix .. "mentions:{" .. user .. "}:" .. channel)
-- (on a Redis Cluster the caller groups the items by slot: every key of one call hashes by one
-- user tag's slot)
-- ARGV[1] JSON array of items, item i = [channel id, epoch, seq read up to]
--
-- As in read_marker.lua, a marker of another epoch is stale and is replaced whatever its seq.
-- Returns how many markers moved.

local items = cjson.decode(ARGV[1])
local moved = 0
for i, item in ipairs(items) do
  local read, mentions = KEYS[2 * i - 1], KEYS[2 * i]
  local channel, epoch, seq = item[1], tonumber(item[2]), tonumber(item[3])
  local current = redis.call("HGET", read, channel)
  local keep = false
  if current then
    local ce, cs = current:match("^(%d+):(%d+)$")
    keep = tonumber(ce) == epoch and tonumber(cs) >= seq
  end
  if not keep then
    redis.call("HSET", read, channel, string.format("%d:%d", epoch, seq))
    redis.call("ZREMRANGEBYSCORE", mentions, "-inf", seq)
    moved = moved + 1
  end
end
return moved

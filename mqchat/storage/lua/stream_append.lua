-- Append many entries to one stream, in order, capped like XADD MAXLEN ~.
--
-- KEYS[1] the stream (the push jobs, prefix .. "push:{queues}:jobs", or the message log,
--         prefix .. "messages:log")
-- ARGV[1] the approximate cap (MAXLEN ~)
-- ARGV[2] JSON array of entries, each a flat array of strings [field, value, field, value, ...]
--
-- One call instead of one XADD per entry: the bridge's follow-ups of a batch are one command.
-- Returns the id of the last entry added (false when there were none).

local entries = cjson.decode(ARGV[2])
local last = false
for _, fields in ipairs(entries) do
  last = redis.call("XADD", KEYS[1], "MAXLEN", "~", ARGV[1], "*", unpack(fields))
end
return last

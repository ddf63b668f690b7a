-- Register or refresh a device's push token, keeping at most a number of devices per user.
--
-- KEYS[1] the user's push devices (hash: device id -> registration JSON carrying "updated_ms")
-- ARGV[1] the device id
-- ARGV[2] its registration (JSON)
-- ARGV[3] most devices kept for the user (at least 1)
--
-- A device already registered is refreshed in place. A new one, when the user already has ARGV[3]
-- devices, replaces the least recently registered (lowest "updated_ms", then lowest device id).
-- Returns the device ids removed to make room (usually none, at most a few after the cap was lowered).

local evicted = {}
if redis.call("HEXISTS", KEYS[1], ARGV[1]) == 0 then
  local all = redis.call("HGETALL", KEYS[1])
  local excess = #all / 2 - tonumber(ARGV[3]) + 1
  if excess > 0 then
    local regs = {}
    for i = 1, #all, 2 do
      local ok, reg = pcall(cjson.decode, all[i + 1])
      local ms = 0
      if ok and type(reg) == "table" and tonumber(reg["updated_ms"]) then
        ms = tonumber(reg["updated_ms"])
      end
      regs[#regs + 1] = {all[i], ms}
    end
    table.sort(regs, function(a, b)
      if a[2] ~= b[2] then
        return a[2] < b[2]
      end
      return a[1] < b[1]
    end)
    for i = 1, excess do
      redis.call("HDEL", KEYS[1], regs[i][1])
      evicted[#evicted + 1] = regs[i][1]
    end
  end
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
return evicted

-- Shared prelude, prepended to every script of lua/ at build time (see scheduler-core/src/scripts.rs).
-- One clock decides when a task is due: the Redis server's. Hosts' clocks are never consulted.
-- Redis 7 replicates script effects, so reading TIME before writing is safe on replicas and AOF.
-- Server time in microseconds (about 1.8e15: an exact integer in a Lua double).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Server time in unix milliseconds, the unit of every score and time field.
local function now_ms()
  return math.floor(now_us() / 1000)
end

-- Score of a task in a ready sorted set: higher priority first (0..9), then older first.
-- Priorities 0..9 are offsets of 1e13 ms (~317 years); every score stays an exact integer.
local function ready_score(priority, t)
  return (9 - tonumber(priority)) * 1e13 + t
end

-- Head (earliest due time, unix ms) of a scheduled sorted set, or -1 when it is empty.
local function head_of(zkey)
  local h = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if h[2] then return tonumber(h[2]) end
  return -1
end

-- ZREM of many members, in chunks: Lua's unpack() fails beyond ~8000 values.
local function zrem_all(zkey, ids)
  for i = 1, #ids, 1000 do
    redis.call('ZREM', zkey, unpack(ids, i, math.min(i + 999, #ids)))
  end
end

-- release: hand running tasks back at once, as on a graceful shutdown that ran out of time.
--
-- Steps, for each (id, token) given: if the task is `running` with that token, state -> `ready`,
-- the attempt is not counted (attempts - 1; an `attempts` that is not a decimal integer >= 1 is
-- repaired to 0: the task is going back to be claimed anyway, and 0 gives it all its runs), into
-- the ready set, out of the active set; report 1. Otherwise report -1. Publish `r:<shard>` when
-- tasks went to the ready set and the partition's drained flag is not `0` (see wake_ready).
-- A task whose `cancel` field is set (cancel.lua: its cancellation was requested) is not handed
-- back: it ends `cancelled` (cancel_running) and reports 2.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:active  sorted set  id -> lease deadline (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready   sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:drained string      `1`/absent: the workers stopped claiming
-- KEYS[4] <ns>:{<queue>:<shard>}:stats   hash        counters
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4..] per task, 2 values: id, token
--
-- Output: an array with one integer per task, in order: 1 handed back, 2 cancelled, -1 stale
--         lease.
local active, ready, drained, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, channel, shard = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local released = 0
local out = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'token', 'priority', 'attempts', 'cancel')
  if f[1] == RUNNING and f[2] == ARGV[i + 1] and f[5] then
    redis.call('ZREM', active, id)
    cancel_running(key, stats, now, f[5], 'handed back at shutdown after cancellation was requested')
    out[#out + 1] = 2
  elseif f[1] == RUNNING and f[2] == ARGV[i + 1] then
    redis.call('HSET', key, 'state', READY, 'attempts', math.max((int_of(f[4]) or 1) - 1, 0))
    redis.call('HDEL', key, 'worker')
    redis.call('ZREM', active, id)
    redis.call('ZADD', ready, ready_score(f[3], now), id)
    released = released + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = -1
  end
end
if released > 0 then wake_ready(drained, channel, shard) end
return out

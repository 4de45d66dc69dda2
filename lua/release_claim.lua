-- release_claim: hand back at once the tasks of one claim whose reply never reached its worker
-- (connection dropped, Redis restarted, reply timed out). Without this they would wait out their
-- lease, running nowhere.
--
-- Each claim labels the tasks it takes with its own tag in the `worker` field
-- (`<worker id>#<claim number>`), so the tasks of a lost claim are exactly those still `running`
-- under that tag: the worker never started them. Steps:
--   1. Read the server clock; look at the active set's unexpired leases (at most ARGV[4]).
--   2. For each task `running` with `worker` = the tag: state -> `ready`, the attempt is not
--      counted (attempts - 1; an `attempts` that is not a decimal integer >= 1 is repaired to 0:
--      the task is going back to be claimed anyway), `worker` removed, out of the active set,
--      into the ready set. The token stays; the next claim increments it.
--   3. Publish `r:<shard>` when tasks went to the ready set and the partition's drained flag is
--      not `0` (see wake_ready).
-- A claim that never ran, or whose tasks were reaped already, leaves nothing to do. Such a task
-- whose `cancel` field is set (cancel.lua: its cancellation was requested meanwhile) is not
-- handed back: it ends `cancelled` (cancel_running) and is not counted.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:active  sorted set  id -> lease deadline (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready   sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:drained string      `1`/absent: the workers stopped claiming
-- KEYS[4] <ns>:{<queue>:<shard>}:stats   hash        counters
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4] most leases examined
-- ARGV[5] the lost claim's tag
--
-- Output: the number of tasks handed back.
local active, ready, drained, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, channel, shard, limit, tag = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local now = now_ms()
local leased = redis.call('ZRANGEBYSCORE', active, now, '+inf', 'LIMIT', 0, limit)
local back, pairs = {}, {}
for _, id in ipairs(leased) do
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'worker', 'priority', 'attempts', 'cancel')
  if f[1] == RUNNING and f[2] == tag and f[5] then
    redis.call('ZREM', active, id)
    cancel_running(key, stats, now, f[5], 'its claim was lost after cancellation was requested')
  elseif f[1] == RUNNING and f[2] == tag then
    redis.call('HSET', key, 'state', READY, 'attempts', math.max((int_of(f[4]) or 1) - 1, 0))
    redis.call('HDEL', key, 'worker')
    back[#back + 1] = id
    pairs[#pairs + 1] = ready_score(f[3], now)
    pairs[#pairs + 1] = id
  end
end
if #back > 0 then
  zrem_all(active, back)
  zadd_all(ready, pairs)
  wake_ready(drained, channel, shard)
end
return #back

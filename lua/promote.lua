-- promote: move due tasks of one partition from the scheduled set to the ready set.
--
-- Steps:
--   1. Read the server clock; take at most ARGV[2] ids whose due time is <= now.
--   2. For each: state `scheduled` -> `ready`, add to the ready set scored by priority and due
--      time, remove from the scheduled set (one ZADD and one ZREM per batch). An id whose hash is
--      gone (expired, deleted by hand) or whose state is not `scheduled` is only removed from the
--      scheduled set.
--   3. Publish `r:<shard>` when the ready set went from empty to non-empty.
-- Two promoters racing on one partition cannot move a task twice: this script is atomic and a
-- task leaves the scheduled set in the same step that puts it in the ready set.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready      sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:stats      hash        counters
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] batch size (max tasks moved by this call)
-- ARGV[3] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[4] shard number
--
-- Output: { moved, next due time (unix ms) or -1 when nothing is scheduled, server now (unix ms),
--           server now (unix microseconds, for callers that time their next call precisely) }
local sched, ready, stats = KEYS[1], KEYS[2], KEYS[3]
local prefix, batch, channel, shard = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local us = now_us()
local now = math.floor(us / 1000)
local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now, 'WITHSCORES', 'LIMIT', 0, batch)
local moved = 0
if #due > 0 then
  local was_empty = redis.call('ZCARD', ready) == 0
  local ids, pairs = {}, {}
  for i = 1, #due, 2 do
    local id = due[i]
    local key = prefix .. id
    ids[#ids + 1] = id
    local f = redis.call('HMGET', key, 'state', 'priority')
    if f[1] == 'scheduled' then
      redis.call('HSET', key, 'state', 'ready')
      pairs[#pairs + 1] = ready_score(f[2], tonumber(due[i + 1]))
      pairs[#pairs + 1] = id
      moved = moved + 1
    end
  end
  zadd_all(ready, pairs)
  zrem_all(sched, ids)
  if moved > 0 then
    redis.call('HINCRBY', stats, 'promoted', moved)
    if was_empty then redis.call('PUBLISH', channel, 'r:' .. shard) end
  end
end
return { moved, head_of(sched), now, us }

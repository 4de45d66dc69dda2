-- promote: move due tasks of one partition from the scheduled set to the ready set.
--
-- Steps:
--   1. Read the server clock; take at most ARGV[2] ids whose due time is <= now.
--   2. For each: state `scheduled` -> `ready`, add to the ready set scored by priority and due
--      time, remove from the scheduled set (one ZADD and one ZREM per batch). An id whose state
--      is another known one (cancelled, or moved on by hand) is only removed from the scheduled
--      set. A record that cannot be read is handled on its own and counted as corrupt: an id
--      whose hash is gone is removed from the scheduled set; a hash whose `state` is absent or
--      not a known state goes to the dead set with the reason (`corrupt record: state ...`).
--   3. Publish `r:<shard>` when tasks went to the ready set and the partition's drained flag is
--      not `0` (see wake_ready).
-- Two promoters racing on one partition cannot move a task twice: this script is atomic and a
-- task leaves the scheduled set in the same step that puts it in the ready set.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready      sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:stats      hash        counters
-- KEYS[4] <ns>:{<queue>:<shard>}:dead       sorted set  id -> time of death (unix ms)
-- KEYS[5] <ns>:{<queue>:<shard>}:drained    string      `1`/absent: the workers stopped claiming
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] batch size (max tasks moved by this call)
-- ARGV[3] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[4] shard number
--
-- Output: { moved, next due time (unix ms) or -1 when nothing is scheduled, server now (unix ms),
--           server now (unix microseconds, for callers that time their next call precisely),
--           corrupt (records that could not be read: ids without a hash dropped, plus hashes
--           buried) }
local sched, ready, stats, dead, drained = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, batch, channel, shard = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local us = now_us()
local now = math.floor(us / 1000)
local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now, 'WITHSCORES', 'LIMIT', 0, batch)
local moved, corrupt = 0, 0
if #due > 0 then
  local ids, pairs = {}, {}
  for i = 1, #due, 2 do
    local id = due[i]
    local key = prefix .. id
    ids[#ids + 1] = id
    local f = redis.call('HMGET', key, 'state', 'priority')
    if f[1] == SCHEDULED then
      redis.call('HSET', key, 'state', READY)
      pairs[#pairs + 1] = ready_score(f[2], tonumber(due[i + 1]))
      pairs[#pairs + 1] = id
      moved = moved + 1
    elseif not STATES[f[1]] or IN_A_SET[f[1]] then
      if f[1] or redis.call('EXISTS', key) == 1 then
        bury_corrupt(key, dead, id, now, 'state ' .. shown(f[1]))
      end
      corrupt = corrupt + 1
    end
  end
  zadd_all(ready, pairs)
  zrem_all(sched, ids)
  if moved > 0 then
    redis.call('HINCRBY', stats, 'promoted', moved)
    wake_ready(drained, channel, shard)
  end
end
return { moved, head_of(sched), now, us, corrupt }

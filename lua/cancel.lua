-- cancel: withdraw a task that has not started, or ask the worker running it to stop.
--
-- Steps:
--   1. `scheduled` or `ready`: remove it from its set, state -> `cancelled`, finished time, expire
--      the hash after ARGV[2] ms (0 deletes it at once); report 1.
--   2. `running`: record the request in the field `cancel` (the TTL ARGV[2], which whatever
--      script ends the task as `cancelled` gives its hash) and publish `c:<shard>:<id>` on the
--      wake-up channel: the worker running it stops its handler (docs/flow-control.md). Report 2.
--      The worker ends it with cancel_run.lua; a retry or a reap of it ends it `cancelled` too.
--   3. `succeeded`, `dead` or `cancelled`: change nothing, report 3.
--   4. No such task: report 0.
-- Archive on (ARGV[6] > 0): a cancelled task gets an entry on the archive stream before its hash
-- changes (archive_entry, archive_push). Off: no command more.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready      sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:stats      hash        counters
-- KEYS[4] <ns>:{<queue>:<shard>}:archive    stream      finished attempts not archived yet
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] TTL (ms) of the cancelled task's hash
-- ARGV[3] task id
-- ARGV[4] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[5] shard number
-- ARGV[6] archive bound (entries kept in KEYS[4] at most); 0 = archive off
--
-- Output: 1 cancelled, 2 running (cancellation requested), 3 already finished, 0 not found.
local sched, ready, stats = KEYS[1], KEYS[2], KEYS[3]
local prefix, ttl, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local key = prefix .. id
local state = redis.call('HGET', key, 'state')
if not state then return 0 end
if state == RUNNING then
  redis.call('HSET', key, 'cancel', ttl)
  redis.call('PUBLISH', ARGV[4], 'c:' .. ARGV[5] .. ':' .. id)
  return 2
end
if state ~= SCHEDULED and state ~= READY then return 3 end
redis.call('ZREM', sched, id)
redis.call('ZREM', ready, id)
redis.call('HINCRBY', stats, 'cancelled', 1)
local bound = tonumber(ARGV[6])
if bound > 0 then
  archive_push(KEYS[4], stats, bound, { archive_entry(key, id, CANCELLED, now_ms(), nil, nil) })
end
if ttl > 0 then
  redis.call('HSET', key, 'state', CANCELLED, 'finished_at', now_ms())
  redis.call('PEXPIRE', key, ttl)
else
  redis.call('DEL', key)
end
return 1

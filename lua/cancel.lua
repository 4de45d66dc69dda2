-- cancel: withdraw a task that has not started.
--
-- Steps:
--   1. `scheduled` or `ready`: remove it from its set, state -> `cancelled`, finished time, expire
--      the hash after ARGV[2] ms (0 deletes it at once); report 1.
--   2. `running`: change nothing, report 2 (a running task is not interrupted).
--   3. `succeeded`, `dead` or `cancelled`: change nothing, report 3.
--   4. No such task: report 0.
-- Archive on (ARGV[4] > 0): a cancelled task gets an entry on the archive stream before its hash
-- changes (archive_entry, archive_push). Off: no command more.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready      sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:stats      hash        counters
-- KEYS[4] <ns>:{<queue>:<shard>}:archive    stream      finished attempts not archived yet
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] TTL (ms) of the cancelled task's hash
-- ARGV[3] task id
-- ARGV[4] archive bound (entries kept in KEYS[4] at most); 0 = archive off
--
-- Output: 1 cancelled, 2 running, 3 already finished, 0 not found.
local sched, ready, stats = KEYS[1], KEYS[2], KEYS[3]
local prefix, ttl, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local key = prefix .. id
local state = redis.call('HGET', key, 'state')
if not state then return 0 end
if state == RUNNING then return 2 end
if state ~= SCHEDULED and state ~= READY then return 3 end
redis.call('ZREM', sched, id)
redis.call('ZREM', ready, id)
redis.call('HINCRBY', stats, 'cancelled', 1)
local bound = tonumber(ARGV[4])
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

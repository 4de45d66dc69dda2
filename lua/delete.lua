-- delete: remove a task that is not running, whatever its state (an operator's clean-up).
--
-- Steps:
--   1. No such task: report 0.
--   2. `running`: change nothing, report 2 (its worker holds a lease; cancel or wait instead).
--   3. Any other state, unreadable states included: remove the id from the partition's
--      scheduled, ready and dead sets, delete the hash, count it; report 1.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready      sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:dead       sorted set  id -> time of death (unix ms)
-- KEYS[4] <ns>:{<queue>:<shard>}:stats      hash        counters
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] task id
--
-- Output: 1 deleted, 2 running, 0 not found.
local sched, ready, dead, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, id = ARGV[1], ARGV[2]
local key = prefix .. id
if redis.call('EXISTS', key) == 0 then return 0 end
if redis.call('HGET', key, 'state') == RUNNING then return 2 end
redis.call('ZREM', sched, id)
redis.call('ZREM', ready, id)
redis.call('ZREM', dead, id)
redis.call('DEL', key)
redis.call('HINCRBY', stats, 'deleted', 1)
return 1

-- requeue: give dead tasks another chance, as an operator asks (`schedctl requeue`).
--
-- Steps, for each id given (the caller passes at most a batch, e.g. 500, per call):
--   1. No task hash: drop the id from the dead set (a leftover of a deleted task); report 0.
--   2. State another known one and the id not in the dead set: change nothing; report 2. (A
--      hash whose `state` is absent or unknown, or names another state while its id is in the
--      dead set, was damaged: it is dead by the set it is in, and is requeued as in 3, the
--      record repaired.)
--   3. `dead`: state -> `ready`, attempts reset to 0 (the task again has max retries + 1 runs),
--      `lost` removed (0 lost leases), due now (`run_at` = server now), `finished_at` removed; the last `error` is kept for the
--      record. Out of the dead set, into the ready set scored by priority and server now. The
--      token is left as is: the next claim increments it. Count `requeued`; report 1.
-- Then, once per call: publish `r:<shard>` when tasks went to the ready set and the partition's
-- drained flag is not `0` (see wake_ready).
--
-- KEYS[1] <ns>:{<queue>:<shard>}:dead   sorted set  id -> time of death (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready  sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:stats  hash        counters
-- KEYS[4] <ns>:{<queue>:<shard>}:drained string     `1`/absent: the workers stopped claiming
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4..] task ids
--
-- Output: an array with one integer per id, in order: 1 requeued, 2 not dead (unchanged),
--         0 not found.
local dead, ready, stats, drained = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, channel, shard = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local requeued = 0
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'priority')
  if not f[1] and redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', dead, id)
    out[#out + 1] = 0
  elseif f[1] ~= DEAD and STATES[f[1]] and not redis.call('ZSCORE', dead, id) then
    out[#out + 1] = 2
  else
    redis.call('HSET', key, 'state', READY, 'attempts', 0, 'run_at', now)
    redis.call('HDEL', key, 'finished_at', 'lost')
    redis.call('ZREM', dead, id)
    redis.call('ZADD', ready, ready_score(f[2] or 0, now), id)
    requeued = requeued + 1
    out[#out + 1] = 1
  end
end
if requeued > 0 then redis.call('HINCRBY', stats, 'requeued', requeued) end
if requeued > 0 then wake_ready(drained, channel, shard) end
return out

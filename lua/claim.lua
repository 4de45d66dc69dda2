-- claim: take ready tasks of one partition into leases (visibility timeouts) with fencing tokens.
--
-- Steps, for at most ARGV[2] tasks, highest priority and oldest first:
--   1. Pop the id from the ready set. An id whose hash is gone or whose state is not `ready` is
--      dropped (it was cancelled or handled already).
--   2. Increment the task's fencing token and attempt count (both absent, i.e. 0, before the
--      first claim); state `ready` -> `running`; record the worker and start time; add the id to
--      the active set with deadline now + lease (one ZADD for the whole batch).
-- Every later change by the worker (ack, retry, extend, release) must present this token; once the
-- lease is reaped and the task claimed again, the old token is rejected.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:ready   sorted set  id -> ready score
-- KEYS[2] <ns>:{<queue>:<shard>}:active  sorted set  id -> lease deadline (unix ms)
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] batch size (max tasks claimed)
-- ARGV[3] lease length (ms)
-- ARGV[4] the claim's tag, `<worker id>#<claim number>`, stored as `worker` (shown to operators;
--         release_claim.lua finds the tasks of a claim whose reply was lost by it)
--
-- Output: { server now (unix ms), ids popped (claimed or dropped; fewer than the batch size means
--           the ready set is now empty), then 9 values per claimed task: id, token, attempts,
--           name, args (MessagePack bytes), max retries, timeout (ms), due time (unix ms),
--           lost leases (runs of the attempts lost with their worker, see reap.lua) }
local ready, active = KEYS[1], KEYS[2]
local prefix, batch, lease, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
local popped = redis.call('ZPOPMIN', ready, batch)
local out = { now, #popped / 2 }
local leased = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'name', 'args', 'max_retries', 'timeout_ms', 'run_at',
    'token', 'attempts', 'args:1', 'lost')
  if f[1] == 'ready' then
    local token = (tonumber(f[7]) or 0) + 1
    local attempts = (tonumber(f[8]) or 0) + 1
    redis.call('HSET', key, 'state', 'running', 'token', token, 'attempts', attempts,
      'worker', worker, 'started_at', now)
    leased[#leased + 1] = now + lease
    leased[#leased + 1] = id
    out[#out + 1] = id
    out[#out + 1] = token
    out[#out + 1] = attempts
    out[#out + 1] = f[2] or ""
    out[#out + 1] = get_blob(key, 'args', f[3], f[9])
    out[#out + 1] = tonumber(f[4]) or 0
    out[#out + 1] = tonumber(f[5]) or 0
    out[#out + 1] = tonumber(f[6]) or now
    out[#out + 1] = tonumber(f[10]) or 0
  end
end
zadd_all(active, leased)
return out

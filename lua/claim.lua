-- claim: take ready tasks of one partition into leases (visibility timeouts) with fencing tokens.
--
-- Steps, for at most ARGV[2] tasks, highest priority and oldest first:
--   1. Pop the id from the ready set. An id whose state is another known one (cancelled or
--      handled already) is dropped. A record that cannot be read is handled on its own and
--      counted as corrupt: an id whose hash is gone is dropped; a hash whose `state` is absent or
--      unknown, or whose `token`, `attempts` or `lost` (absent: 0), `max_retries` or `timeout_ms`
--      is not a decimal integer >= 0, goes to the dead set with the reason
--      (`corrupt record: <field> <value>`). (An unreadable `run_at` is repaired in the reply only:
--      the due time is server now; it is informational.)
--   2. A task with a deadline (`expires`) that is passed does not start: it ends `expired`
--      (expire_task: `expired` + 1 in KEYS[5], its hash kept for ARGV[5] ms, an archive entry
--      when ARGV[6] > 0) and is counted in the reply. A task without one reads one field more.
--      Task events on for the queue (ARGV[7] given): its `expired` event is published on the
--      channel ARGV[7] (publish_event). Off (no ARGV[7]): no command more.
--   3. Increment the task's fencing token and attempt count (both absent, i.e. 0, before the
--      first claim); state `ready` -> `running`; record the worker and start time; add the id to
--      the active set with deadline now + lease (one ZADD for the whole batch).
--   4. Fewer ids popped than asked: the ready set is now empty and the workers stop looking, so
--      set the partition's drained flag to `1` (the next script to add a ready task publishes
--      `r:<shard>`, see wake_ready).
-- Every later change by the worker (ack, retry, extend, release) must present this token; once the
-- lease is reaped and the task claimed again, the old token is rejected.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:ready    sorted set  id -> ready score
-- KEYS[2] <ns>:{<queue>:<shard>}:active   sorted set  id -> lease deadline (unix ms)
-- KEYS[3] <ns>:{<queue>:<shard>}:dead     sorted set  id -> time of death (unix ms)
-- KEYS[4] <ns>:{<queue>:<shard>}:drained  string      `1`/absent: the workers stopped claiming
-- KEYS[5] <ns>:{<queue>:<shard>}:stats    hash        counters (`expired` only)
-- KEYS[6] <ns>:{<queue>:<shard>}:archive  stream      finished attempts not archived yet
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] batch size (max tasks claimed)
-- ARGV[3] lease length (ms)
-- ARGV[4] the claim's tag, `<worker id>#<claim number>`, stored as `worker` (shown to operators;
--         release_claim.lua finds the tasks of a claim whose reply was lost by it)
-- ARGV[5] how long the record of an expired task is kept (ms; 0 deletes it)
-- ARGV[6] archive bound (entries kept in KEYS[6] at most); 0 = archive off
-- ARGV[7] task events channel <ns>:events:<queue>; absent when the queue's events are off
--
-- Output: { server now (unix ms), ids popped (claimed or dropped; fewer than the batch size means
--           the ready set is now empty), corrupt (records that could not be read: ids without a
--           hash dropped, plus hashes buried), expired (tasks past their deadline, ended
--           `expired`), then 9 values per claimed task: id, token,
--           attempts, name, args (MessagePack bytes; { args, headers } for a task with
--           headers), max retries, timeout (ms), due time
--           (unix ms), lost leases (runs of the attempts lost with their worker, see reap.lua) }
local ready, active, dead, drained = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, batch, lease, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local expired_ttl, bound, events = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local now = now_ms()
local popped = redis.call('ZPOPMIN', ready, batch)
local out = { now, #popped / 2, 0, 0 }
local corrupt, expired = 0, 0
local leased, archived = {}, {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = prefix .. id
  local f = redis.call('HMGET', key, unpack(LEASE_FIELDS))
  local why
  if f[1] == READY then
    if f[13] and past_deadline(f[13], now) then
      local why = 'deadline ' .. f[13] .. ' passed before the task started'
      expire_task(key, id, KEYS[5], now, why, expired_ttl, bound, archived)
      expired = expired + 1
      if events then publish_event(events, 'expired', id, f[7], now, why) end
    else
      why = lease_task(key, id, f, now, now + lease, worker, out, leased)
    end
  elseif not STATES[f[1]] or IN_A_SET[f[1]] then
    if f[1] or redis.call('EXISTS', key) == 1 then
      why = 'state ' .. shown(f[1])
    else
      corrupt = corrupt + 1
    end
  end
  if why then
    bury_corrupt(key, dead, id, now, why)
    corrupt = corrupt + 1
  end
end
out[3] = corrupt
out[4] = expired
zadd_all(active, leased)
if expired > 0 and bound > 0 then archive_push(KEYS[6], KEYS[5], bound, archived) end
if #popped / 2 < batch then redis.call('SET', drained, '1') end
return out

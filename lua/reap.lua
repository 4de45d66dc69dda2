-- reap: recover tasks whose lease expired (their worker died, hung or was cut off).
--
-- Steps, for at most ARGV[2] ids of the active set whose lease deadline is <= now:
--   1. A task still `running` counts the expired lease in `lost` (+1). While `lost` <= ARGV[5] it
--      goes back to `ready` and into the ready set; beyond, it goes to `dead` with the reason.
--      Lost leases are counted apart from handler failures (`retry.lua` bounds those by
--      `max_retries`): a run lost with its worker uses up no retry, yet a task that kills its
--      worker every time still ends dead. `attempts` (every claim) is left as is. Its token is
--      left as is too: the next claim increments it, so the lost worker's token is rejected from
--      then on, and before that the state is no longer `running`. A task in another known state
--      (acknowledged, retried) is only removed from the active set. A `running` task whose
--      `cancel` field is set (cancel.lua: its cancellation was requested, then its worker was
--      lost) ends `cancelled` instead (cancel_running), counted under `cancelled` only.
--      A record that cannot be read is handled on its own and counted as corrupt: an id whose
--      hash is gone is removed from the active set; a hash whose `state` is absent or unknown, or
--      (when `running`) whose `attempts` is not a decimal integer >= 0 or whose `lost` is present
--      and not one, goes to the dead set with the reason (`corrupt record: <field> <value>`).
--      A task requeued or buried here gets the lost attempt appended to its `attempt_log`
--      (log_attempt).
--   2. Remove the id from the active set.
--   Archive on (ARGV[6] > 0): each task buried or cancelled in 1 gets an entry on the archive stream
--   (archive_entry, archive_push). Off: no command more.
--   3. Publish `r:<shard>` when tasks went back to the ready set and the partition's drained flag
--      is not `0` (see wake_ready).
--   Task events on for the queue (ARGV[7] not empty): each task requeued, buried or cancelled in
--   1 gets its event on the channel ARGV[7] (`retried`, `dead`, `cancelled`, in the form of
--   scheduler_core::events::TaskEvent). Off: no command more.
--   A task buried or cancelled in 1 whose headers name a workflow (`scheduler-workflow`, see
--   docs/workflows.md) is listed in the reply with its headers and how it ended, so that the
--   caller records its end in the workflow at once (wf_done.lua, on the workflow's slot, which
--   this script cannot touch) rather than leaving it to the workflow sweep. Its headers are read
--   in the HMGET that reads the task anyway: no command more.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:active   sorted set  id -> lease deadline (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready    sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:dead     sorted set  id -> time of death (unix ms)
-- KEYS[4] <ns>:{<queue>:<shard>}:stats    hash        counters
-- KEYS[5] <ns>:{<queue>:<shard>}:drained  string      `1`/absent: the workers stopped claiming
-- KEYS[6] <ns>:{<queue>:<shard>}:archive  stream      finished attempts not archived yet
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] batch size (max leases reaped by this call)
-- ARGV[3] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[4] shard number
-- ARGV[5] most lost leases a task may have and still go back to ready (max_lost_leases)
-- ARGV[6] archive bound (entries kept in KEYS[6] at most); 0 = archive off
-- ARGV[7] task events channel <ns>:events:<queue>, or empty when the queue's events are off
--
-- Output: { requeued, buried, next lease deadline (unix ms) or -1 when no lease is held,
--           corrupt (records that could not be read: ids without a hash dropped, plus hashes
--           buried; not counted in `buried`), then 3 values per workflow member buried or
--           cancelled: id, headers (as stored), its end (the error of a dead one,
--           `cancelled: <reason>`) }
local active, ready, dead, stats, drained = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, batch, channel, shard = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local max_lost = tonumber(ARGV[5])
local bound = tonumber(ARGV[6])
local archived, members = {}, {}
local now = now_ms()
local events = ARGV[7] or ''
-- Lists task `id` (hash `key`) in the reply when its headers (the HMGET's `h1`, `h2`) name a
-- workflow, with `ended`. Called before the hash may be deleted.
local function member(key, id, h1, h2, ended)
  if not h1 then return end
  local h = get_blob(key, 'headers', h1, h2)
  if string.find(h, 'scheduler-workflow', 1, true) then
    members[#members + 1] = id
    members[#members + 1] = h
    members[#members + 1] = ended
  end
end
-- The task event `kind` of run `attempt` of task `id` (events on only).
local function event(kind, id, attempt, detail)
  if events ~= '' then
    redis.call('PUBLISH', events, kind .. '\n' .. id .. '\n' .. (attempt or 0) .. '\n' .. now
      .. '\n' .. detail)
  end
end
local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, batch)
local requeued, buried, corrupt = 0, 0, 0
if #expired > 0 then
  for _, id in ipairs(expired) do
    local key = prefix .. id
    local f = redis.call('HMGET', key, 'state', 'attempts', 'lost', 'priority', 'cancel',
      'worker', 'started_at', 'attempt_log', 'headers', 'headers:1')
    local attempts, lost = int_of(f[2]), int_of(f[3] or '0')
    if f[1] == RUNNING then
      if f[5] then
        -- Cancelled while it ran (cancel.lua), then its worker was lost: it ends `cancelled`.
        local why = 'lease expired after cancellation was requested'
        if bound > 0 then archived[#archived + 1] = archive_entry(key, id, CANCELLED, now, why, nil) end
        member(key, id, f[9], f[10], 'cancelled: ' .. why)
        cancel_running(key, stats, now, f[5], why)
        event('cancelled', id, attempts, why)
      elseif not attempts or attempts < 0 then
        bury_corrupt(key, dead, id, now, 'attempts ' .. shown(f[2]))
        corrupt = corrupt + 1
      elseif not lost or lost < 0 then
        bury_corrupt(key, dead, id, now, 'lost ' .. shown(f[3]))
        corrupt = corrupt + 1
      elseif lost + 1 <= max_lost then
        local err = 'lease expired: worker lost during attempt ' .. attempts
        redis.call('HSET', key, 'state', READY, 'lost', lost + 1, 'error', err,
          'attempt_log', log_attempt(f[8], attempts, f[7], now, f[6], err))
        redis.call('HDEL', key, 'worker')
        redis.call('ZADD', ready, ready_score(f[4], now), id)
        requeued = requeued + 1
        event('retried', id, attempts, 'lease expired: worker lost during attempt ' .. attempts)
      else
        lost = lost + 1
        local err = 'lease expired ' .. lost .. ' times: worker lost during ' .. lost .. ' of '
          .. attempts .. ' attempts (max_lost_leases = ' .. ARGV[5] .. ')'
        if bound > 0 then archived[#archived + 1] = archive_entry(key, id, DEAD, now, err, nil) end
        redis.call('HSET', key, 'state', DEAD, 'finished_at', now, 'lost', lost, 'error', err,
          'attempt_log', log_attempt(f[8], attempts, f[7], now, f[6], err))
        redis.call('HDEL', key, 'worker')
        redis.call('ZADD', dead, now, id)
        buried = buried + 1
        event('dead', id, attempts, err)
        member(key, id, f[9], f[10], err)
      end
    elseif not STATES[f[1]] or IN_A_SET[f[1]] then
      if f[1] or redis.call('EXISTS', key) == 1 then
        bury_corrupt(key, dead, id, now, 'state ' .. shown(f[1]))
      end
      corrupt = corrupt + 1
    end
  end
  zrem_all(active, expired)
  if requeued > 0 then
    redis.call('HINCRBY', stats, 'reaped', requeued)
    wake_ready(drained, channel, shard)
  end
  if buried > 0 then redis.call('HINCRBY', stats, 'dead', buried) end
  if bound > 0 then archive_push(KEYS[6], stats, bound, archived) end
end
local out = { requeued, buried, head_of(active), corrupt }
for _, v in ipairs(members) do out[#out + 1] = v end
return out

-- retry: after a failed run, schedule the next attempt or bury the task in the dead set.
--
-- Steps, for each (id, token, error, delay) given:
--   1. If its token differs, or it is not `running`, change nothing and report -1 — except when
--      the task is still under this token with this error (a retried call whose first reply was
--      lost: a reaped task carries the reaper's error instead): `dead` reports 2, `scheduled` or
--      `ready` (promoted since) reports 1.
--   2. Record the error text. If delay >= 0 and attempts - lost <= max retries (runs lost with
--      their worker, counted by `reap.lua` in `lost`, use up no retry): state -> `scheduled`,
--      due at server now + delay, into the scheduled set (the promoter is woken when this is the
--      new head). Otherwise (delay -1 means "fail now", or retries exhausted): state -> `dead`,
--      into the dead set with the time of death. A retry due after the task's deadline
--      (`expires`, when it has one) does not happen: the task ends `expired` (expire_task: kept
--      for ARGV[5] ms, `expired` + 1 in `stats`) and reports 5.
--      Either way the failed attempt is appended to the record's `attempt_log` (log_attempt:
--      attempt, start, failure time, worker, error; the last 10 kept).
--   3. Remove the id from the active set.
--   4. Archive on (ARGV[4] > 0): one entry per task buried or cancelled (2, 3 or 4 below) on
--      the archive stream (archive_entry, archive_push). Off: no command more.
-- A running task under this token whose `cancel` field is set (cancel.lua: its cancellation was
-- requested while it ran) is not retried: it ends `cancelled` (cancel_running) and reports 4.
-- A running task under this token whose `attempts` or `max_retries` is not a decimal integer
-- >= 0, or whose `lost` is present and not one, cannot be judged: it goes to the dead set
-- with the reason (`corrupt record: <field> <value>; the run failed: <error>`) and reports 3.
-- Every value is checked before the task's first write, so no task is left half-moved.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:active     sorted set  id -> lease deadline (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[3] <ns>:{<queue>:<shard>}:dead       sorted set  id -> time of death (unix ms)
-- KEYS[4] <ns>:{<queue>:<shard>}:stats      hash        counters
-- KEYS[5] <ns>:{<queue>:<shard>}:archive    stream      finished attempts not archived yet
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4] archive bound (entries kept in KEYS[5] at most); 0 = archive off
-- ARGV[5] how long the record of an expired task is kept (ms; 0 deletes it)
-- ARGV[6..] per task, 4 values: id, token, error (text), retry delay (ms; -1 = no retry)
--
-- Output: an array with one integer per task, in order: 1 scheduled for retry, 2 dead,
--         3 dead because its record could not be read, 4 cancelled (its cancellation was
--         requested while it ran, see cancel.lua: not retried), 5 expired (its retry would
--         start after its deadline), -1 stale lease (rejected).
local active, sched, dead, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, channel, shard = ARGV[1], ARGV[2], ARGV[3]
local bound, expired_ttl = tonumber(ARGV[4]), ARGV[5]
local archived = {}
local now = now_ms()
local head = head_of(sched)
local new_head = false
local out = {}
local retried, buried = 0, 0
for i = 6, #ARGV, 4 do
  local id = ARGV[i]
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'token', 'attempts', 'max_retries', 'error', 'lost',
    'cancel', 'expires', 'worker', 'started_at', 'attempt_log')
  if f[2] ~= ARGV[i + 1] then
    out[#out + 1] = -1
  elseif f[1] == EXPIRED then
    -- Expired under this token: by a retried call of this report whose reply was lost, or by
    -- a claim after the report (the token is the last lease's). Either way, not running.
    out[#out + 1] = 5
  elseif f[1] ~= RUNNING then
    if f[5] ~= ARGV[i + 2] then
      out[#out + 1] = -1
    elseif f[1] == DEAD then
      out[#out + 1] = 2
    else
      out[#out + 1] = 1
    end
  else
    local delay = tonumber(ARGV[i + 3])
    local attempts, retries, lost = int_of(f[3]), int_of(f[4]), int_of(f[6] or '0')
    local why
    if not attempts or attempts < 0 then why = 'attempts ' .. shown(f[3])
    elseif not retries or retries < 0 then why = 'max_retries ' .. shown(f[4])
    elseif not lost or lost < 0 then why = 'lost ' .. shown(f[6]) end
    redis.call('ZREM', active, id)
    if f[7] then
      -- Cancelled while it ran (cancel.lua): it ends `cancelled`, not retried.
      if bound > 0 then
        archived[#archived + 1] = archive_entry(key, id, CANCELLED, now, ARGV[i + 2], nil)
      end
      cancel_running(key, stats, now, f[7], ARGV[i + 2])
      out[#out + 1] = 4
    elseif why then
      if bound > 0 then
        archived[#archived + 1] = archive_entry(key, id, DEAD, now,
          'corrupt record: ' .. why .. '; the run failed: ' .. ARGV[i + 2], nil)
      end
      bury_corrupt(key, dead, id, now, why .. '; the run failed: ' .. ARGV[i + 2])
      out[#out + 1] = 3
    elseif delay >= 0 and attempts - lost <= retries and f[8]
        and past_deadline(f[8], now + delay) then
      expire_task(key, id, stats, now, 'the run failed: ' .. ARGV[i + 2] ..
        '; its retry would start after the deadline ' .. f[8], expired_ttl, bound, archived)
      out[#out + 1] = 5
    elseif delay >= 0 and attempts - lost <= retries then
      local due = now + delay
      redis.call('HSET', key, 'state', SCHEDULED, 'run_at', due, 'error', ARGV[i + 2],
        'attempt_log', log_attempt(f[11], attempts, f[10], now, f[9], ARGV[i + 2]))
      redis.call('HDEL', key, 'worker')
      redis.call('ZADD', sched, due, id)
      if head < 0 or due < head then head = due; new_head = true end
      retried = retried + 1
      out[#out + 1] = 1
    else
      if bound > 0 then
        archived[#archived + 1] = archive_entry(key, id, DEAD, now, ARGV[i + 2], nil)
      end
      redis.call('HSET', key, 'state', DEAD, 'error', ARGV[i + 2], 'finished_at', now,
        'attempt_log', log_attempt(f[11], attempts, f[10], now, f[9], ARGV[i + 2]))
      redis.call('HDEL', key, 'worker')
      redis.call('ZADD', dead, now, id)
      buried = buried + 1
      out[#out + 1] = 2
    end
  end
end
if retried > 0 then redis.call('HINCRBY', stats, 'retried', retried) end
if buried > 0 then redis.call('HINCRBY', stats, 'dead', buried) end
if bound > 0 then archive_push(KEYS[5], stats, bound, archived) end
if new_head then redis.call('PUBLISH', channel, 's:' .. shard .. ':' .. string.format('%d', head)) end
return out

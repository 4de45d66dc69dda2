-- restore: recreate tasks read from an export file in one partition, idempotently, each in the
-- state it was exported in (scheduled, ready or dead), with its history (attempts, lost runs,
-- last error, enqueue and finish times).
--
-- Steps, for each task given:
--   1. If the task hash already exists, leave it untouched and report 0: importing a file twice,
--      or into a namespace that has the task, never creates a second one. If one of its values
--      is not what the header below says, write nothing for it and report -2.
--   2. Scheduled or ready: its due time is its run-at. Due now or in the past (by the server
--      clock): state `ready`, added to the ready set (scored by priority, then run-at).
--      Otherwise: state `scheduled`, added to the scheduled set at its run-at.
--      Dead: state `dead`, added to the dead set at its finish time, with its error.
--   3. Write the task hash: the fields enqueue.lua writes (args in 64-byte pieces, see
--      put_blob), plus `attempts`, `lost`, `error`, `finished_at` and `headers` (in pieces, as
--      enqueue.lua writes it) when they are set.
-- Then, once per call: count the tasks created under `restored` in the stats hash; publish
-- `r:<shard>` when tasks went to the ready set and the partition's drained flag is not `0` (see
-- wake_ready), and `s:<shard>:<due>` when the scheduled set got a new, earlier head.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready      sorted set  id -> ready score (priority, then time)
-- KEYS[3] <ns>:{<queue>:<shard>}:dead       sorted set  id -> time of death (unix ms)
-- KEYS[4] <ns>:{<queue>:<shard>}:stats      hash        counters
-- KEYS[5] <ns>:{<queue>:<shard>}:drained    string      `1`/absent: the workers stopped claiming
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:` (the task hash is prefix .. id)
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4..] per task, 14 values: id, name, args (MessagePack bytes), state (`scheduled`,
--           `ready` or `dead`), run-at (unix ms), max retries, timeout (ms), priority (0..9),
--           attempts, lost runs, last error ('' for none), enqueued-at (unix ms),
--           finished-at (unix ms; used for `dead` only), headers (MessagePack map of strings,
--           '' for none)
--
-- Output: an array with one integer per task, in order: 1 restored, 0 already existed,
--         -2 invalid (nothing written).
local sched, ready, dead, stats, drained = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, channel, shard = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local head = head_of(sched)
local new_head = false
local made_ready = false
local created = 0
local out = {}
local to_ready, to_sched, to_dead = {}, {}, {}
for i = 4, #ARGV, 14 do
  local id, name, args, state = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local run_at, retries, timeout = int_of(ARGV[i + 4]), int_of(ARGV[i + 5]), int_of(ARGV[i + 6])
  local priority, attempts, lost = int_of(ARGV[i + 7]), int_of(ARGV[i + 8]), int_of(ARGV[i + 9])
  local err, enqueued_at, finished_at = ARGV[i + 10], int_of(ARGV[i + 11]), int_of(ARGV[i + 12])
  local headers = ARGV[i + 13]
  local key = prefix .. (id or '')
  if id == nil or id == '' or name == nil or args == nil or err == nil or headers == nil
      or not (state == SCHEDULED or state == READY or state == DEAD)
      or not (run_at and retries and timeout and priority and attempts and lost and enqueued_at
        and finished_at)
      or retries < 0 or timeout < 0 or priority < 0 or priority > 9 or attempts < 0
      or lost < 0 then
    out[#out + 1] = -2
  elseif redis.call('EXISTS', key) == 1 then
    out[#out + 1] = 0
  else
    local fv = { 'name', name, 'max_retries', retries, 'timeout_ms', timeout,
      'priority', priority, 'run_at', run_at, 'enqueued_at', enqueued_at }
    if state == DEAD then
      to_dead[#to_dead + 1] = finished_at
      to_dead[#to_dead + 1] = id
      fv[#fv + 1] = 'finished_at'
      fv[#fv + 1] = finished_at
    elseif run_at <= now then
      state = READY
      to_ready[#to_ready + 1] = ready_score(priority, run_at)
      to_ready[#to_ready + 1] = id
      made_ready = true
    else
      state = SCHEDULED
      to_sched[#to_sched + 1] = run_at
      to_sched[#to_sched + 1] = id
      if head < 0 or run_at < head then head = run_at; new_head = true end
    end
    fv[#fv + 1] = 'state'
    fv[#fv + 1] = state
    if attempts > 0 then fv[#fv + 1] = 'attempts'; fv[#fv + 1] = attempts end
    if lost > 0 then fv[#fv + 1] = 'lost'; fv[#fv + 1] = lost end
    if err ~= '' then fv[#fv + 1] = 'error'; fv[#fv + 1] = err end
    put_blob(fv, 'args', args)
    put_blob(fv, 'headers', headers)
    hset_all(key, fv)
    created = created + 1
    out[#out + 1] = 1
  end
end
zadd_all(ready, to_ready)
zadd_all(sched, to_sched)
zadd_all(dead, to_dead)
if created > 0 then redis.call('HINCRBY', stats, 'restored', created) end
if made_ready then wake_ready(drained, channel, shard) end
if new_head then redis.call('PUBLISH', channel, 's:' .. shard .. ':' .. string.format('%d', head)) end
return out

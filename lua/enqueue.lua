-- enqueue: create tasks in one partition, idempotently.
--
-- Steps, for each task given:
--   1. If the task hash already exists, leave it untouched and report 0 (a unique id or a retried
--      enqueue after a lost reply never creates a second task). If one of its values is not
--      what the header below says (empty id, a number that is not a decimal integer in range),
--      write nothing for it and report -2: every value is checked before the task's first write,
--      so one bad task neither fails the call nor touches any other task.
--   2. Compute its due time: server now + delay, or the absolute run-at when delay is -1; and
--      its deadline, when it has one, the same way. A deadline that is passed already, or before
--      the due time (the task could never start): write nothing for it and report -3.
--   3. Write the task hash (args in 64-byte pieces, see put_blob, written in chunks of 500
--      pieces by hset_all, so any size works; no attempt, no token yet; `headers`, in pieces
--      too, only when the task has headers; `expires`, the deadline, only when it has one).
--      Due now or in the past: state `ready`, added to the ready set. Otherwise: state
--      `scheduled`, added to the scheduled set (one ZADD per set and call).
-- Then, once per call: publish `r:<shard>` when tasks went to the ready set and the partition's
-- drained flag is not `0` (see wake_ready), and `s:<shard>:<due>` when the scheduled set got a
-- new, earlier head (wakes the promoter).
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready      sorted set  id -> ready score (priority, then time)
-- KEYS[3] <ns>:{<queue>:<shard>}:stats      hash        counters
-- KEYS[4] <ns>:{<queue>:<shard>}:drained    string      `1`/absent: the workers stopped claiming
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:` (the task hash is prefix .. id)
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4] values per task: 8; 9 when the call carries headers; 11 when it carries deadlines
-- ARGV[5..] per task, 8 values: id, name, args (MessagePack bytes), delay (ms, or -1),
--           run-at (unix ms, used when delay is -1), max retries, timeout (ms), priority (0..9);
--           then, when ARGV[4] is 9 or 11, headers (MessagePack map of strings; empty: none);
--           then, when ARGV[4] is 11, the deadline: expire-after (ms from now, or -1), expire-at
--           (unix ms, used when expire-after is -1; 0 with -1: no deadline)
--
-- Output: an array with one integer per task, in order: 1 created, 0 already existed,
--         -2 invalid (nothing written), -3 deadline passed or before the due time (nothing
--         written).
-- Whether a deadline pair (expire-after, expire-at) reads as integers in range.
local function deadline_ok(after, at)
  local a, t = tonumber(after), tonumber(at)
  return a ~= nil and t ~= nil and a % 1 == 0 and t % 1 == 0 and a >= -1 and a < 1e15
    and t >= 0 and t < 1e15
end

local sched, ready, stats, drained = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, channel, shard, per = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if per ~= 9 and per ~= 11 then per = 8 end
local now = now_ms()
local head = head_of(sched)
local new_head = false
local made_ready = false
local created = 0
local out = {}
local to_ready, to_sched = {}, {}
for i = 5, #ARGV, per do
  local id = ARGV[i]
  local key = prefix .. id
  -- Inline checks (tonumber, then integers in range): a helper call per value cost 2% of a call.
  local delay, at = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local retries, timeout, priority = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  if id == nil or id == '' or ARGV[i + 2] == nil or not (delay and at and retries and timeout
      and priority and delay % 1 == 0 and at % 1 == 0 and retries % 1 == 0 and timeout % 1 == 0
      and priority % 1 == 0 and delay >= -1 and delay < 1e15 and at > -1e15 and at < 1e15
      and retries >= 0 and retries < 1e15 and timeout >= 0 and timeout < 1e15
      and priority >= 0 and priority <= 9) then
    out[#out + 1] = -2
  elseif per == 11 and not deadline_ok(ARGV[i + 9], ARGV[i + 10]) then
    out[#out + 1] = -2
  elseif redis.call('EXISTS', key) == 1 then
    out[#out + 1] = 0
  else
    local due
    if delay >= 0 then due = now + delay else due = at end
    local expires
    if per == 11 then
      local e_after, e_at = tonumber(ARGV[i + 9]), tonumber(ARGV[i + 10])
      if e_after >= 0 then expires = now + e_after elseif e_at ~= 0 then expires = e_at end
    end
    if expires and (expires <= now or expires < due) then
      out[#out + 1] = -3
    else
      local state
      if due <= now then
        state = READY
        to_ready[#to_ready + 1] = ready_score(priority, due)
        to_ready[#to_ready + 1] = id
        made_ready = true
      else
        state = SCHEDULED
        to_sched[#to_sched + 1] = due
        to_sched[#to_sched + 1] = id
        if head < 0 or due < head then head = due; new_head = true end
      end
      local fv = { 'name', ARGV[i + 1], 'state', state, 'max_retries', ARGV[i + 5],
        'timeout_ms', ARGV[i + 6], 'priority', ARGV[i + 7], 'run_at', due, 'enqueued_at', now }
      put_blob(fv, 'args', ARGV[i + 2])
      if per >= 9 then put_blob(fv, 'headers', ARGV[i + 8] or '') end
      if expires then fv[#fv + 1] = 'expires'; fv[#fv + 1] = expires end
      if #fv <= 1000 then redis.call('HSET', key, unpack(fv)) else hset_all(key, fv) end
      created = created + 1
      out[#out + 1] = 1
    end
  end
end
zadd_all(ready, to_ready)
zadd_all(sched, to_sched)
if created > 0 then redis.call('HINCRBY', stats, 'enqueued', created) end
if made_ready then wake_ready(drained, channel, shard) end
if new_head then redis.call('PUBLISH', channel, 's:' .. shard .. ':' .. string.format('%d', head)) end
return out

-- schedule_write: change one periodic schedule and create the tasks of its ticks, atomically,
-- guarded by the schedule's revision (compare-and-set). The caller (scheduler-core schedules.rs)
-- computes ticks, due times and new fields from the record it read; this script only checks
-- that nothing changed since and applies the result. Ordinary tasks never pass through here.
--
-- Steps:
--   1. Compare the record's `rev` (absent record: 0) with the expected revision; if it differs,
--      change nothing and reply -1: another process wrote first, the caller reads again.
--   2. If server now is past the caller's deadline (ARGV[5], its plan is stale: a process paused
--      between reading and writing), change nothing and reply -3.
--   3. Mode `del`: delete the record; reply {1, 0}.
--   4. Overlap guard (ARGV[7] >= 0): if the task of the record's `last_id` is still `scheduled`,
--      `ready` or `running`, change nothing and reply -4 while server now is before the guarded
--      tick time, -5 once it is not (the caller then writes a skip of that tick).
--   5. HSET the given fields, `rev` + 1, `skipped` + ARGV[8]; create each given task exactly as
--      enqueue.lua does (an existing id is left untouched), `fired` + the tasks created; publish
--      the same wake-ups as enqueue.lua. Task events on for the queue (ARGV[9] not empty):
--      each task created gets its `enqueued` event on the channel ARGV[9] (publish_event); off:
--      no command more. Reply {1, tasks created}.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:sch:<name>  hash        the schedule (docs/schedules.md)
-- KEYS[2] <ns>:{<queue>:<shard>}:scheduled   sorted set  id -> due time (unix ms)
-- KEYS[3] <ns>:{<queue>:<shard>}:ready       sorted set  id -> ready score
-- KEYS[4] <ns>:{<queue>:<shard>}:stats       hash        counters
-- KEYS[5] <ns>:{<queue>:<shard>}:drained     string      drained flag (see claim.lua)
-- ARGV[1] task key prefix `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] wake-up channel `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4] expected revision (0: the record must not exist)
-- ARGV[5] deadline of the plan, server unix ms (0: none)
-- ARGV[6] mode: `set` or `del`
-- ARGV[7] overlap guard: the tick time (unix ms) of the task to create, or -1 for no guard
-- ARGV[8] ticks skipped by this write (added to `skipped`)
-- ARGV[9] task events channel <ns>:events:<queue>, or empty when the queue's events are off
-- ARGV[10] F, the number of field/value pairs that follow
-- ARGV[11 .. 10+2F] field, value, ...
-- ARGV[11+2F ..] per task, 7 values: id, name, args (MessagePack), due (unix ms), max retries,
--           timeout (ms), priority (0..9)
--
-- Output: {1, created} applied; -1 stale revision; -3 plan past its deadline; -4 previous run
--         still queued or running, tick not reached; -5 the same, tick reached.
local key, sched, ready, stats, drained = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, channel, shard = ARGV[1], ARGV[2], ARGV[3]
local rev = tonumber(redis.call('HGET', key, 'rev')) or 0
if rev ~= tonumber(ARGV[4]) then return -1 end
local now = now_ms()
local deadline = tonumber(ARGV[5])
if deadline > 0 and now > deadline then return -3 end
if ARGV[6] == 'del' then
  redis.call('DEL', key)
  return { 1, 0 }
end
local guard = tonumber(ARGV[7])
if guard >= 0 then
  local last = redis.call('HGET', key, 'last_id')
  if last then
    local st = redis.call('HGET', prefix .. last, 'state')
    if st == SCHEDULED or st == READY or st == RUNNING then
      if now < guard then return -4 end
      return -5
    end
  end
end
local events = ARGV[9]
local nf = tonumber(ARGV[10])
local fv = {}
for i = 11, 10 + 2 * nf do fv[#fv + 1] = ARGV[i] end
if #fv > 0 then redis.call('HSET', key, unpack(fv)) end
redis.call('HINCRBY', key, 'rev', 1)
local skipped = tonumber(ARGV[8])
if skipped > 0 then redis.call('HINCRBY', key, 'skipped', skipped) end
local head = head_of(sched)
local new_head, made_ready, created = false, false, 0
for i = 11 + 2 * nf, #ARGV, 7 do
  local id, due = ARGV[i], tonumber(ARGV[i + 3])
  local tkey = prefix .. id
  if redis.call('EXISTS', tkey) == 0 then
    local state
    if due <= now then
      state = READY
      redis.call('ZADD', ready, ready_score(ARGV[i + 6], due), id)
      made_ready = true
    else
      state = SCHEDULED
      redis.call('ZADD', sched, due, id)
      if head < 0 or due < head then head = due; new_head = true end
    end
    local t = { 'name', ARGV[i + 1], 'state', state, 'max_retries', ARGV[i + 4],
      'timeout_ms', ARGV[i + 5], 'priority', ARGV[i + 6], 'run_at', due, 'enqueued_at', now }
    put_blob(t, 'args', ARGV[i + 2])
    hset_all(tkey, t)
    created = created + 1
    if events ~= '' then publish_event(events, 'enqueued', id, 0, now, '') end
  end
end
if created > 0 then
  redis.call('HINCRBY', stats, 'enqueued', created)
  redis.call('HINCRBY', key, 'fired', created)
end
if made_ready then wake_ready(drained, channel, shard) end
if new_head then redis.call('PUBLISH', channel, 's:' .. shard .. ':' .. string.format('%d', head)) end
return { 1, created }

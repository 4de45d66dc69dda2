-- wf_done: records that one member of a workflow finished, and says what comes next
-- (docs/workflows.md). Runs on the workflow's own slot only (`{wf:<id>}`): the member's task
-- lives in another partition, which this script never touches.
--
-- Idempotent: a member's outcome is recorded once (field `x:<stage>:<i>`, set only when absent);
-- calling again for a recorded member changes nothing and returns what the first call returned
-- (or what the workflow became since). So a worker that crashed after this call, and whose
-- member then runs again, repeats the same follow-up steps, which are idempotent too.
--
-- Steps:
--   1. No record, or a member it does not list: reply {'gone'}. Member not recorded yet:
--      `x:` = `ok` / `err`, `r:` = the result (MessagePack) or the error message,
--      `d:<stage>` + 1. An error while the workflow runs, unless the policy is `continue` and
--      the stage is a group (`g:<stage>` = 1): state `failed`, `error`, `finished_at`.
--   2. State `failed`: reply {'failed', member ids not recorded yet, of every stage} when this
--      call failed it (the caller cancels them: the held ones never run), {'failed'} otherwise
--      (so that the members cancelled do not each cancel the rest again: the sweep cancels
--      what a crashed caller left). State `succeeded`: reply {'succeeded'}.
--   3. Stage not complete: reply {'wait'}. Last stage complete: state `succeeded`,
--      `finished_at`, reply {'succeeded'}. Otherwise `cur` = next stage (never moved back)
--      and reply {'release', next stage, group flag of this stage, policy, {outcome, payload}
--      per member of this stage in order, {member id, receives flag, fixed args} per member
--      of the next stage}: the caller releases the next stage's held tasks (wf_release.lua),
--      giving the receiving ones this stage's result appended to their arguments.
-- A finished workflow's record expires after its field `ttl_ms` (absent: 7 days).
-- A record with the field `events` (the channel `<ns>:events:wf:<id>`, written at the start when
-- every member's queue had task events on): the call that makes the workflow `succeeded` or
-- `failed` publishes that state on it (what wakes Client::wait_workflow); without it, no command.
--
-- KEYS[1] <ns>:wf:{<id>}   hash   the workflow record (fields in docs/redis-layout.md)
-- ARGV[1] stage of the member (0-based)
-- ARGV[2] position of the member in its stage (0-based)
-- ARGV[3] `ok` or `err`
-- ARGV[4] the result (MessagePack bytes) or the error message
-- A workflow's states (not a task's, though two are spelled alike).
local WF_RUNNING, WF_SUCCEEDED, WF_FAILED = 'running', 'succeeded', 'failed'
local wf = KEYS[1]
local s, i, outcome, payload = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local f = redis.call('HMGET', wf, 'state', 'stages', 'policy', 'n:' .. s, 'g:' .. s, 'ttl_ms', 'cur',
  'events')
local state, stages, policy, size = f[1], tonumber(f[2]), f[3], tonumber(f[4])
local ttl = tonumber(f[6]) or 604800000
-- Under policy `continue` only a group's member may fail without failing the workflow.
local tolerated = policy == 'continue' and f[5] == '1'
-- A member the record does not list (a header edited by hand): as if the workflow were gone.
local idx = tonumber(i)
if not state or not stages or not size or not idx or idx < 0 or idx >= size then
  return { 'gone' }
end
local sfx = s .. ':' .. i
local failed_now = false
if redis.call('HSETNX', wf, 'x:' .. sfx, outcome) == 1 then
  redis.call('HSET', wf, 'r:' .. sfx, payload)
  redis.call('HINCRBY', wf, 'd:' .. s, 1)
  if outcome == 'err' and not tolerated and state == WF_RUNNING then
    state = WF_FAILED
    failed_now = true
    local why = 'member ' .. (redis.call('HGET', wf, 'm:' .. sfx) or sfx) .. ' failed: ' .. payload
    redis.call('HSET', wf, 'state', state, 'error', why, 'finished_at', now_ms())
    redis.call('PEXPIRE', wf, ttl)
    if f[8] then redis.call('PUBLISH', f[8], state) end
  end
end
if state == WF_FAILED then
  local left = { 'failed' }
  if not failed_now then return left end
  for st = 0, stages - 1 do
    local n = tonumber(redis.call('HGET', wf, 'n:' .. st)) or 0
    for j = 0, n - 1 do
      if not redis.call('HGET', wf, 'x:' .. st .. ':' .. j) then
        left[#left + 1] = redis.call('HGET', wf, 'm:' .. st .. ':' .. j)
      end
    end
  end
  return left
end
if state ~= WF_RUNNING then return { state } end
local done = tonumber(redis.call('HGET', wf, 'd:' .. s)) or 0
if done < size then return { 'wait' } end
local stage = tonumber(s)
if stage + 1 >= stages then
  redis.call('HSET', wf, 'state', WF_SUCCEEDED, 'finished_at', now_ms())
  redis.call('PEXPIRE', wf, ttl)
  if f[8] then redis.call('PUBLISH', f[8], WF_SUCCEEDED) end
  return { WF_SUCCEEDED }
end
local nxt = stage + 1
-- A stage completed again (a member that ran again) does not move `cur` back.
if (tonumber(f[7]) or 0) < nxt then redis.call('HSET', wf, 'cur', nxt) end
local results = {}
for j = 0, size - 1 do
  local r = redis.call('HMGET', wf, 'x:' .. s .. ':' .. j, 'r:' .. s .. ':' .. j)
  results[#results + 1] = { r[1], r[2] or '' }
end
local members = {}
local n = tonumber(redis.call('HGET', wf, 'n:' .. nxt)) or 0
for j = 0, n - 1 do
  local sf = nxt .. ':' .. j
  local m = redis.call('HMGET', wf, 'm:' .. sf, 'p:' .. sf, 'a:' .. sf)
  members[#members + 1] = { m[1] or '', m[2] or '0', m[3] or '' }
end
return { 'release', nxt, f[5] or '0', policy, results, members }

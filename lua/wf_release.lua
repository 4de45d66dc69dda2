-- wf_release: starts a held member of a workflow (docs/workflows.md): a task the workflow
-- created at its start with the due time HELD (ARGV[5], far in the future), made due now once
-- the stage before it completed. Idempotent: only a task still `scheduled` with `run_at` HELD
-- is released, so a second call (a retried follow-up, a sweep) changes nothing.
--
-- Steps: not `scheduled` at HELD (already released, cancelled, gone): reply 0. Otherwise, when
-- ARGV[6] is `1`, the task's arguments are replaced by ARGV[7] (in pieces, put_blob; the old
-- pieces deleted); `run_at` and the score become now; `s:<shard>:<now>` is published so the
-- promoter wakes at once, as for an enqueue creating a new head. Reply 1.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4] task id
-- ARGV[5] HELD, the due time (unix ms) of a held task
-- ARGV[6] `1`: replace the arguments by ARGV[7]; `0`: keep them
-- ARGV[7] the new arguments (MessagePack bytes)
local sched = KEYS[1]
local prefix, channel, shard, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = prefix .. id
-- Held: scheduled at HELD (`run_at` is the due time; a cancelled task keeps it, but not its
-- state). HMGET rather than ZSCORE: the commands the ACL rules of docs/deployment.md allow.
local f = redis.call('HMGET', key, 'state', 'run_at')
if f[1] ~= SCHEDULED or tonumber(f[2]) ~= tonumber(ARGV[5]) then return 0 end
local now = now_ms()
if ARGV[6] == '1' then
  redis.call('HDEL', key, 'args')
  local n = 1
  while redis.call('HDEL', key, 'args:' .. n) == 1 do n = n + 1 end
  local fv = {}
  put_blob(fv, 'args', ARGV[7])
  if #fv > 0 then hset_all(key, fv) end
end
redis.call('HSET', key, 'run_at', now)
redis.call('ZADD', sched, now, id)
redis.call('PUBLISH', channel, 's:' .. shard .. ':' .. string.format('%d', now))
return 1

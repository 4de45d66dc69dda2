-- limit_park: put claimed tasks that a limit does not let start back to wait, in their own
-- partition, without counting the attempt (docs/flow-control.md).
--
-- Steps, for each (id, token, due, limit) given, if the task is `running` under that lease token
-- (else nothing changes for it: -1):
--   state `running` -> `scheduled` with due time `due` (when the limit should let it start: the
--   promoter moves it then, like any delayed task); out of the active set; the attempt the claim
--   counted is taken back (`attempts` - 1; the fencing token stays, so the old lease stays
--   void); `worker` and `started_at` removed; `limited` = the limit that held it (for
--   operators). Its `run_at` (the due time it was asked for) is unchanged, so its lateness
--   counts the wait. Then, once per call: the tasks parked leave the active set and enter the
--   scheduled set (one ZREM, one ZADD for them all), and `s:<shard>:<due>` is published when the
--   partition's earliest due time moved earlier.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:active     sorted set  id -> lease deadline (unix ms)
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4..] per task, 4 values: id, lease token, due time (unix ms), the limit that held it
--           (its scope, as `Inspector::limits` shows it)
--
-- Output: an array with one integer per task, in order: 1 parked, -1 stale lease.
local sched, active = KEYS[1], KEYS[2]
local prefix, channel, shard = ARGV[1], ARGV[2], ARGV[3]
local head = head_of(sched)
local earliest
local out, parked, pairs = {}, {}, {}
for i = 4, #ARGV, 4 do
  local id, token, due = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'token', 'attempts')
  if f[1] == RUNNING and f[2] == token and due then
    redis.call('HSET', key, 'state', SCHEDULED, 'attempts',
      math.max(0, (tonumber(f[3]) or 1) - 1), 'limited', ARGV[i + 3])
    redis.call('HDEL', key, 'worker', 'started_at')
    parked[#parked + 1] = id
    pairs[#pairs + 1] = due
    pairs[#pairs + 1] = id
    if not earliest or due < earliest then earliest = due end
    out[#out + 1] = 1
  else
    out[#out + 1] = -1
  end
end
-- One ZREM and one ZADD per call, not per task.
zrem_all(active, parked)
zadd_all(sched, pairs)
if earliest and (head < 0 or earliest < head) then
  redis.call('PUBLISH', channel, 's:' .. shard .. ':' .. string.format('%d', earliest))
end
return out

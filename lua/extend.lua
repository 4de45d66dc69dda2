-- extend: renew the leases of tasks a worker is still running.
--
-- Steps, for each (id, token) given: if the task is `running` with that token, set its lease
-- deadline to server now + ARGV[2] and report 1, or 2 when its cancellation was requested (the
-- `cancel` field of cancel.lua, read in the same HMGET: how a worker that missed the `c:` message
-- learns of it, within a third of a lease); otherwise (lease lost) change nothing, report -1.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:active  sorted set  id -> lease deadline (unix ms)
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] lease length (ms)
-- ARGV[3..] per task, 2 values: id, token
--
-- Output: an array with one integer per task, in order: 1 extended, 2 extended and its
--         cancellation requested, -1 stale lease.
local active = KEYS[1]
local prefix, lease = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local f = redis.call('HMGET', prefix .. id, 'state', 'token', 'cancel')
  if f[1] == RUNNING and f[2] == ARGV[i + 1] then
    redis.call('ZADD', active, 'XX', now + lease, id)
    out[#out + 1] = f[3] and 2 or 1
  else
    out[#out + 1] = -1
  end
end
return out

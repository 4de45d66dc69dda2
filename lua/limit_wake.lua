-- limit_wake: make a task that waits for a concurrency slot due now, once limit_release.lua
-- handed it one (docs/flow-control.md). Only a task still `scheduled` and parked by a limit
-- (field `limited`) is moved; a task cancelled, deleted or run meanwhile is left alone.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] task id
-- ARGV[3] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[4] shard number
--
-- Output: 1 made due now (and `s:<shard>:<now>` published: the promoter wakes), 0 not waiting.
local sched, prefix, id = KEYS[1], ARGV[1], ARGV[2]
local f = redis.call('HMGET', prefix .. id, 'state', 'limited')
if f[1] ~= SCHEDULED or not f[2] or not redis.call('ZSCORE', sched, id) then return 0 end
local now = now_ms()
redis.call('ZADD', sched, now, id)
redis.call('PUBLISH', ARGV[3], 's:' .. ARGV[4] .. ':' .. string.format('%d', now))
return 1

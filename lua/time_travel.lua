-- time_travel: makes scheduled tasks of one partition due now, for tests (`scheduler::testing`).
--
-- Refuses, changing nothing, unless the namespace carries the test marker (KEYS[1]), which only
-- `scheduler::testing::TestRedis` writes, on a redis-server it started itself: a production
-- namespace cannot be time-travelled by accident.
--
-- Mode window (ARGV[4] >= 0): the scheduled tasks due after now and at most ARGV[4] ms from now,
-- at most ARGV[5] of them (the earliest first), get due time now. Tasks already due are left
-- as they are (the promoter moves them), so calling again moves the next ones.
-- Mode ids (ARGV[4] = -1): the tasks ARGV[6..] that are in the scheduled set and not due yet
-- get due time now.
-- Either way each moved task's `run_at` becomes now and, when any moved, `s:<shard>:<now>` is
-- published so the promoter wakes at once, as for an enqueue that creates a new head.
--
-- KEYS[1] <ns>:testing                       string      the test marker
-- KEYS[2] <ns>:{<queue>:<shard>}:scheduled   sorted set  id -> due time (unix ms)
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4] window in ms, or -1 for the ids given
-- ARGV[5] the most tasks to move in window mode
-- ARGV[6..] task ids (ids mode)
--
-- Output: the number of tasks moved, or -1 when the namespace is not marked for tests.
local marker, sched = KEYS[1], KEYS[2]
local prefix, channel, shard = ARGV[1], ARGV[2], ARGV[3]
local window, most = tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('EXISTS', marker) == 0 then return -1 end
local now = now_ms()
local ids = {}
if window >= 0 then
  ids = redis.call('ZRANGEBYSCORE', sched, '(' .. now, now + window, 'LIMIT', 0, most)
else
  for i = 6, #ARGV do
    local due = redis.call('ZSCORE', sched, ARGV[i])
    if due and tonumber(due) > now then ids[#ids + 1] = ARGV[i] end
  end
end
for _, id in ipairs(ids) do
  redis.call('ZADD', sched, now, id)
  redis.call('HSET', prefix .. id, 'run_at', now)
end
if #ids > 0 then redis.call('PUBLISH', channel, 's:' .. shard .. ':' .. string.format('%d', now)) end
return #ids

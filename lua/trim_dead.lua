-- trim_dead: enforce the dead set's retention in one partition (the janitor's job).
--
-- Steps:
--   1. Take at most ARGV[4] ids, oldest first, that died more than ARGV[2] ms ago, or that are
--      beyond the newest ARGV[3] entries of the dead set.
--   2. Delete their task hashes and remove them from the dead set.
-- Deleting a dead task twice is harmless, so janitors need no lock.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:dead  sorted set  id -> time of death (unix ms)
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] max age (ms) of a dead task
-- ARGV[3] max number of dead tasks kept in this partition
-- ARGV[4] batch size (max tasks deleted by this call)
--
-- Output: the number of dead tasks deleted (equal to ARGV[4] means: call again).
local dead = KEYS[1]
local prefix, max_age, max_len, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', dead, '-inf', now - max_age, 'LIMIT', 0, batch)
local excess = redis.call('ZCARD', dead) - #ids - max_len
if excess > 0 and #ids < batch then
  local more = redis.call('ZRANGE', dead, #ids, #ids + math.min(excess, batch - #ids) - 1)
  for _, id in ipairs(more) do ids[#ids + 1] = id end
end
for _, id in ipairs(ids) do
  redis.call('DEL', prefix .. id)
end
zrem_all(dead, ids)
return #ids

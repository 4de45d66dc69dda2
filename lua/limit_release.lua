-- limit_release: give back what a run took from one limit budget, and hand a freed concurrency
-- slot to the first waiter (docs/flow-control.md).
--
-- Steps:
--   1. The holder leaves the holders (its slot is free) and, when ARGV[2] is 1 (the run never
--      started: another budget of the task denied it), its start leaves the window too.
--   2. When ARGV[3] > 0 (the budget has a concurrency limit) and a slot is free, the first
--      waiter is taken off the waiters and returned: the caller makes its task due now
--      (limit_wake.lua). A waiter whose task is gone is the caller's to skip (it calls again
--      with an empty holder to take the next).
--
-- KEYS[1] <ns>:{lim:<digest>}:run   sorted set  holder -> lease deadline (unix ms)
-- KEYS[2] <ns>:{lim:<digest>}:log   sorted set  holder -> start time (unix ms)
-- KEYS[3] <ns>:{lim:<digest>}:wait  sorted set  waiter -> when it first waited (unix ms)
-- ARGV[1] holder, `<queue>\n<shard>\n<id>\n<token>` (empty: release nothing, only hand over)
-- ARGV[2] `1`: also withdraw the holder's start from the rate window
-- ARGV[3] concurrency limit (0: none; nothing is handed over)
--
-- Output: the waiter handed the slot (`<queue>\n<shard>\n<id>`), or false.
local run, log, wait = KEYS[1], KEYS[2], KEYS[3]
local holder, unlog, conc = ARGV[1], ARGV[2], tonumber(ARGV[3])
if holder ~= '' then
  redis.call('ZREM', run, holder)
  if unlog == '1' then redis.call('ZREM', log, holder) end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', run, '-inf', now_ms())
  if redis.call('ZCARD', run) < conc then
    local first = redis.call('ZPOPMIN', wait)
    if first[1] then return first[1] end
  end
end
return false

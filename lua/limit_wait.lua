-- limit_wait: a task parked for want of a concurrency slot (limit_park.lua) joins the budget's
-- waiters, unless a slot freed between its refusal and now (docs/flow-control.md). Run after
-- the park, so that a release can never miss it: a release before this call left a free slot
-- (reply 1: the caller makes the task due now, limit_wake.lua), a release after it finds it
-- among the waiters.
--
-- KEYS[1] <ns>:{lim:<digest>}:run   sorted set  holder -> lease deadline (unix ms)
-- KEYS[2] <ns>:{lim:<digest>}:wait  sorted set  waiter -> when it first waited (unix ms)
-- ARGV[1] concurrency limit
-- ARGV[2] waiter, `<queue>\n<shard>\n<id>`
--
-- Output: 1 a slot is free (not added), 0 added to the waiters (or there already).
local run, wait, conc, waiter = KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', run, '-inf', now)
if redis.call('ZCARD', run) < conc then return 1 end
redis.call('ZADD', wait, 'NX', now, waiter)
return 0

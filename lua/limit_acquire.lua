-- limit_acquire: take starts of limited tasks from one limit budget, for a batch of tasks
-- (docs/flow-control.md). A worker sends the tasks of one budget that reach its gate while a
-- call for that budget is in flight in one call, so a burst of limited tasks costs one call per
-- round trip, not one per task.
--
-- A budget is the counters of one limit (a scope, and for a keyed limit one key): its keys share
-- the hash tag `{lim:<digest>}`, so this script touches one slot, whatever slots the tasks' own
-- partitions and the budget's other tasks live in.
--
-- Steps, once per call: holders whose lease deadline is passed (their worker died without
-- releasing) are dropped, and starts older than the rate window. Then for each task, in order:
--   1. Concurrency limit (ARGV[1] > 0): a holder already present under this member (a retried
--      call) keeps its place; otherwise with ARGV[1] holders or more: denied.
--   2. Rate limit (ARGV[2] > 0 starts per ARGV[3] ms, a sliding window): a start already logged
--      under this member keeps it; otherwise with ARGV[2] starts or more inside the window:
--      denied.
--   3. Granted: the holder is added with deadline now + ARGV[4] (the lease; extended by
--      limit_extend.lua while the run lasts), the start logged at now, and the task leaves the
--      waiters. Reply { 1, now }.
--   4. Denied by the concurrency limit: the task should wait until now + ARGV[5] at most (the
--      wake-up of last resort); once parked it joins the waiters (limit_wait.lua), and the
--      release that frees a slot wakes the first of them (limit_release.lua). Denied by the rate
--      limit: it should wait until the window has room, and the waiters already told a time are
--      spread one spacing (period / limit) apart (the key `next`), so that one freed start does
--      not wake them all at once. Reply { 0, wait-until (unix ms) }.
-- The result is the same as one call per task in the order given.
--
-- KEYS[1] <ns>:{lim:<digest>}:run   sorted set  holder -> lease deadline (unix ms)
-- KEYS[2] <ns>:{lim:<digest>}:log   sorted set  holder -> start time (unix ms), the window
-- KEYS[3] <ns>:{lim:<digest>}:wait  sorted set  waiter -> when it first waited (unix ms)
-- KEYS[4] <ns>:{lim:<digest>}:next  string      the next wake-up handed to a rate-limited task
-- ARGV[1] concurrency limit (0: none)
-- ARGV[2] rate limit: starts per period (0: none)
-- ARGV[3] rate limit period (ms)
-- ARGV[4] lease length (ms)
-- ARGV[5] longest wait of a task denied by the concurrency limit (ms)
-- ARGV[6..] per task, 2 values: holder, `<queue>\n<shard>\n<id>\n<token>` (one run of one
--           claim), and waiter, `<queue>\n<shard>\n<id>`
--
-- Output: an array of 2 integers per task, in order: { 1, server now } granted, or
-- { 0, wait until (unix ms) } denied.
local run, log, wait, nextk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local conc, rate, period = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, longest = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local holding, logged = 0, 0
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', run, '-inf', now)
  holding = redis.call('ZCARD', run)
end
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - period)
  logged = redis.call('ZCARD', log)
end
-- The rate chain, read at the first refusal and written once at the end.
local chained, free
local started = false
local out = {}
for i = 6, #ARGV, 2 do
  local holder, waiter = ARGV[i], ARGV[i + 1]
  local denied
  if conc > 0 and holding >= conc and not redis.call('ZSCORE', run, holder) then
    denied = now + longest
  end
  if not denied and rate > 0 and logged >= rate and not redis.call('ZSCORE', log, holder) then
    if not free then
      local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
      free = tonumber(oldest[2]) + period
      chained = tonumber(redis.call('GET', nextk) or 0) or 0
    end
    denied = math.max(free, chained)
    chained = denied + math.max(1, math.floor(period / rate))
  end
  if denied then
    out[#out + 1] = 0
    out[#out + 1] = denied
  else
    if conc > 0 then
      if redis.call('ZADD', run, now + lease, holder) == 1 then
        holding = holding + 1
      end
      redis.call('ZREM', wait, waiter)
    end
    if rate > 0 and redis.call('ZADD', log, now, holder) == 1 then
      logged = logged + 1
      started = true
    end
    out[#out + 1] = 1
    out[#out + 1] = now
  end
end
if free then
  redis.call('SET', nextk, chained, 'PX', period * 2)
end
if started then
  redis.call('PEXPIRE', log, period)
end
return out

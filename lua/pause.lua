-- pause: pause or resume a queue, and tell every worker serving it at once.
--
-- Steps:
--   1. ARGV[2] = `1` (pause): unless the queue is in the paused hash already, record it with the
--      server clock (unix ms) as the time it was paused. ARGV[2] = `0` (resume): remove it.
--   2. When that changed something, publish `pause` or `resume` on the queue's wake-up channel:
--      every worker serving the queue flips its in-process flag on receipt (no worker reads the
--      hash on its claim path; it reads it when it (re)subscribes and every sweep interval, which
--      covers a message lost with a connection).
-- Not a task transition: no task record, set or counter is touched. A paused queue's tasks keep
-- being enqueued and promoted to the ready set; workers just do not claim them.
--
-- KEYS[1] <ns>:paused  hash  queue name -> time it was paused (unix ms, server clock)
-- ARGV[1] queue name
-- ARGV[2] `1` pause, `0` resume
-- ARGV[3] wake-up channel, `<ns>:wake:<queue>`
--
-- Output: 1 changed (paused, or resumed), 0 nothing to do (already paused, or not paused).
local paused = KEYS[1]
local queue, pause, channel = ARGV[1], ARGV[2] == '1', ARGV[3]
local changed
if pause then
  changed = redis.call('HSETNX', paused, queue, now_ms())
else
  changed = redis.call('HDEL', paused, queue)
end
if changed == 1 then
  redis.call('PUBLISH', channel, pause and 'pause' or 'resume')
end
return changed

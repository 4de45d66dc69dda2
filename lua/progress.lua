-- progress: record how far a running task has got (`ctx.progress(percent, message)` in its
-- handler), fenced by the run's lease token like extend.lua.
--
-- Steps:
--   1. If the task is not `running` under token ARGV[1] (its lease was lost: reaped, handed
--      back, finished, or no record at all), change nothing and report -1.
--   2. Set `progress` = ARGV[2], `progress_at` = server now and `progress_attempt` = the
--      task's `attempts` (the run that reported it: a retry starts with its predecessor's last
--      report until it makes its own).
--   3. Replace the message: delete `progress_msg` and its pieces `progress_msg:1` ..
--      `progress_msg:15`, then write ARGV[3] in pieces of 64 bytes (put_blob), so that the hash
--      stays listpack-encoded; an empty message writes no field.
--   4. Task events on for the queue (ARGV[4] not empty): publish the `progress` event on the
--      channel ARGV[4] (`progress\n<id>\n<attempt>\n<now ms>\n<percent> <message>`, the form
--      of scheduler_core::events::TaskEvent). Off: no command more. Report 1.
-- Touches nothing but the task hash: no set, no counter.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:t:<id>  hash  the task record
-- ARGV[1] lease token of the run (the claim's fencing token)
-- ARGV[2] percent done, an integer 0..100 (checked by the caller: TaskContext::progress)
-- ARGV[3] message, at most 1024 bytes (16 pieces; checked by the caller); may be empty
-- ARGV[4] task events channel <ns>:events:<queue>, or empty when the queue's events are off
-- ARGV[5] the task id (for the event)
--
-- Output: 1 recorded, -1 stale lease (nothing changed).
local key = KEYS[1]
local f = redis.call('HMGET', key, 'state', 'token', 'attempts')
if f[1] ~= RUNNING or f[2] ~= ARGV[1] then
  return -1
end
redis.call('HDEL', key, 'progress_msg', 'progress_msg:1', 'progress_msg:2', 'progress_msg:3',
  'progress_msg:4', 'progress_msg:5', 'progress_msg:6', 'progress_msg:7', 'progress_msg:8',
  'progress_msg:9', 'progress_msg:10', 'progress_msg:11', 'progress_msg:12', 'progress_msg:13',
  'progress_msg:14', 'progress_msg:15')
local now = now_ms()
local fv = { 'progress', ARGV[2], 'progress_at', now, 'progress_attempt', f[3] or '0' }
put_blob(fv, 'progress_msg', ARGV[3])
redis.call('HSET', key, unpack(fv))
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], 'progress\n' .. ARGV[5] .. '\n' .. (f[3] or '0') .. '\n' .. now
    .. '\n' .. ARGV[2] .. ' ' .. ARGV[3])
end
return 1

-- cancel_run: end a running task whose cancellation was requested, by the worker that ran it.
--
-- Steps:
--   1. Unless the task is `running` under this token, change nothing and report -1 (a stale
--      lease: it was reaped, or ended otherwise).
--   2. Out of the active set; state -> `cancelled`, `finished_at` now, `error` = ARGV[4] (what
--      became of the run: the handler stopped, or was aborted after the grace period), `worker`
--      and `cancel` removed, `cancelled` + 1 in the stats; the hash expires after the TTL that
--      cancel.lua recorded in `cancel` (ARGV[5] when absent; 0 deletes it). Not retried.
--   Archive on (ARGV[6] > 0): an entry on the archive stream first (archive_entry,
--   archive_push). Off: no command more.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:active  sorted set  id -> lease deadline (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:stats   hash        counters
-- KEYS[3] <ns>:{<queue>:<shard>}:archive stream      finished attempts not archived yet
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] task id
-- ARGV[3] lease token
-- ARGV[4] what became of the run (text)
-- ARGV[5] TTL (ms) of the cancelled task's hash when `cancel` is absent
-- ARGV[6] archive bound (entries kept in KEYS[3] at most); 0 = archive off
--
-- Output: 1 cancelled, -1 stale lease (nothing changed).
local active, stats = KEYS[1], KEYS[2]
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
local key = prefix .. id
local f = redis.call('HMGET', key, 'state', 'token', 'cancel')
if f[1] ~= RUNNING or f[2] ~= token then return -1 end
redis.call('ZREM', active, id)
local now = now_ms()
local bound = tonumber(ARGV[6])
if bound > 0 then
  archive_push(KEYS[3], stats, bound, { archive_entry(key, id, CANCELLED, now, ARGV[4], nil) })
end
cancel_running(key, stats, now, f[3] or ARGV[5], ARGV[4])
return 1

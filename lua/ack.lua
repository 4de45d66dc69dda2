-- ack: mark running tasks of one partition as succeeded, fenced by their lease tokens.
--
-- Steps, for each (id, token, result) given:
--   1. Already `succeeded` under this token (a retried call whose first reply was lost): report 1
--      and change nothing. Not `running`, or its token differs (the lease was lost and the task
--      handed to another worker): change nothing and report -1. (With a result TTL of 0 the first
--      call deleted the hash, so a retried call reports -1.)
--   2. State -> `succeeded` (the `worker` field stays: who ran it), store the result (MessagePack
--      in 64-byte pieces, see put_blob, written in chunks by hset_all, so any size works;
--      omitted when empty), finished time; remove from the active set (one ZREM per batch);
--      expire the hash after the result TTL (0 deletes it at once). Steps 1 and 2 are ack_one,
--      which promote.lua shares for the acks that ride on a promote.
--   3. Archive on (ARGV[3] > 0): one entry per acknowledged task on the archive stream, before
--      the hash changes (archive_entry, archive_push). Off: no command more.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:active  sorted set  id -> lease deadline (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:stats   hash        counters
-- KEYS[3] <ns>:{<queue>:<shard>}:archive stream      finished attempts not archived yet
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] result TTL (ms); 0 deletes the task hash on success
-- ARGV[3] archive bound (entries kept in KEYS[3] at most); 0 = archive off
-- ARGV[4..] per task, 3 values: id, token, result (MessagePack bytes, or empty)
--
-- Output: an array with one integer per task, in order: 1 acknowledged, -1 stale lease (rejected).
local active, stats = KEYS[1], KEYS[2]
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local bound = tonumber(ARGV[3])
local archived = {}
local now = now_ms()
local out = {}
local done = 0
local removed = {}
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  local code = ack_one(prefix .. id, id, ARGV[i + 1], ARGV[i + 2], now, ttl, bound, archived)
  if code == 1 then
    removed[#removed + 1] = id
    done = done + 1
  end
  out[#out + 1] = math.min(code, 1)
end
if done > 0 then
  zrem_all(active, removed)
  redis.call('HINCRBY', stats, 'succeeded', done)
  if bound > 0 then archive_push(KEYS[3], stats, bound, archived) end
end
return out

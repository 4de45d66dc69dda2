-- enqueue_unique: create one task under a unique-for window (throttle or debounce), atomically.
-- Used only for requests with `unique_for` or `debounce`; plain tasks go through enqueue.lua.
--
-- Steps:
--   1. Check the task's values as enqueue.lua does, and the mode and window; a bad value writes
--      nothing and replies -2. A deadline passed already, or before the due time, writes
--      nothing and replies -3 (as enqueue.lua).
--   2. Read the unique key (KEYS[5]). Absent (no window open): go to 4.
--   3. A window is open, held by task `held` (the key's value):
--        throttle: reply 0 and `held`; nothing changes (whatever state `held` is in, also when its
--                  record is gone: finished with result TTL 0).
--        debounce: when the record of `held` is `scheduled` or `ready` (not started), replace its
--                  name, args and headers (stale 64-byte pieces deleted), due time, max retries,
--                  timeout, priority and deadline (`expires`) by this request's, move it to the set its new due time calls for,
--                  restart the window (PX), reply 2 and `held`. Otherwise (running, finished, or
--                  its record gone) go to 4.
--   4. Create the task as enqueue.lua does (ARGV[6], the id, must not exist: reply 0 and the id
--      if it does, a retried call whose first reply was lost), then SET the unique key to its
--      id with PX = the window. Reply 1 and the id.
-- Wake-ups as in enqueue.lua: `r:<shard>` when the task went to the ready set (wake_ready),
-- `s:<shard>:<due>` when the scheduled set got a new, earlier head.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready      sorted set  id -> ready score (priority, then time)
-- KEYS[3] <ns>:{<queue>:<shard>}:stats      hash        counters
-- KEYS[4] <ns>:{<queue>:<shard>}:drained    string      `1`/absent: the workers stopped claiming
-- KEYS[5] <ns>:{<queue>:<shard>}:u:<digest> string      id of the task holding the window, PX
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:` (the task hash is prefix .. id)
-- ARGV[2] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[3] shard number
-- ARGV[4] mode: `throttle` or `debounce`
-- ARGV[5] window, ms (an integer >= 1)
-- ARGV[6..14] the task: id, name, args (MessagePack bytes), delay (ms, or -1), run-at (unix ms,
--             used when delay is -1), max retries, timeout (ms), priority (0..9), headers
--             (MessagePack map of strings, stored in pieces as `headers`; empty: none)
-- ARGV[15..16] the deadline: expire-after (ms from now, or -1), expire-at (unix ms, used when
--             expire-after is -1; 0 with -1: no deadline), stored as `expires` (enqueue.lua)
--
-- Output: { code, id }: 1 created (id = ARGV[6]), 0 a window is open (throttle) or the id
--         existed already: nothing changed, 2 replaced the pending task `id` (debounce);
--         { -2, '' } invalid (nothing written), { -3, '' } deadline passed or before the due
--         time (nothing written).
local sched, ready, stats, drained, ukey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, channel, shard = ARGV[1], ARGV[2], ARGV[3]
local mode, window = ARGV[4], tonumber(ARGV[5])
local id, name, args = ARGV[6], ARGV[7], ARGV[8]
local delay, at = tonumber(ARGV[9]), tonumber(ARGV[10])
local retries, timeout, priority = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local headers = ARGV[14] or ''
local e_after, e_at = tonumber(ARGV[15] or -1), tonumber(ARGV[16] or 0)
if id == nil or id == '' or args == nil or not (mode == 'throttle' or mode == 'debounce')
    or not (window and window % 1 == 0 and window >= 1 and window < 1e15)
    or not (delay and at and retries and timeout and priority and delay % 1 == 0 and at % 1 == 0
      and retries % 1 == 0 and timeout % 1 == 0 and priority % 1 == 0 and delay >= -1
      and delay < 1e15 and at > -1e15 and at < 1e15 and retries >= 0 and retries < 1e15
      and timeout >= 0 and timeout < 1e15 and priority >= 0 and priority <= 9)
    or not (e_after and e_at and e_after % 1 == 0 and e_at % 1 == 0 and e_after >= -1
      and e_after < 1e15 and e_at >= 0 and e_at < 1e15) then
  return { -2, '' }
end

local now = now_ms()
local due
if delay >= 0 then due = now + delay else due = at end
local expires
if e_after >= 0 then expires = now + e_after elseif e_at ~= 0 then expires = e_at end
if expires and (expires <= now or expires < due) then return { -3, '' } end

-- Puts task `tid` (hash `key`) in the set its due time calls for, with its state; publishes.
local function place(tid, key)
  if due <= now then
    redis.call('ZADD', ready, ready_score(priority, due), tid)
    redis.call('HSET', key, 'state', READY)
    wake_ready(drained, channel, shard)
  else
    local head = head_of(sched)
    redis.call('ZADD', sched, due, tid)
    redis.call('HSET', key, 'state', SCHEDULED)
    if head < 0 or due < head then
      redis.call('PUBLISH', channel, 's:' .. shard .. ':' .. string.format('%d', due))
    end
  end
end

-- Deletes the pieces of `field` past those of the new value `v` (written by the caller). Pieces
-- are contiguous, so a batch that deletes fewer than it names reached the end.
local function drop_stale(hkey, field, v)
  local pieces = math.ceil(#v / PIECE)
  if pieces == 0 then redis.call('HDEL', hkey, field) end
  local n = math.max(pieces, 1)
  while true do
    local names = {}
    for j = n, n + 255 do names[#names + 1] = field .. ':' .. j end
    if redis.call('HDEL', hkey, unpack(names)) < 256 then return end
    n = n + 256
  end
end

local held = redis.call('GET', ukey)
if held then
  if mode == 'throttle' then return { 0, held } end
  local hkey = prefix .. held
  local state = redis.call('HGET', hkey, 'state')
  if state == SCHEDULED or state == READY then
    if state == SCHEDULED then redis.call('ZREM', sched, held) else redis.call('ZREM', ready, held) end
    local fv = { 'name', name, 'max_retries', ARGV[11], 'timeout_ms', ARGV[12],
      'priority', ARGV[13], 'run_at', due }
    put_blob(fv, 'args', args)
    put_blob(fv, 'headers', headers)
    if expires then fv[#fv + 1] = 'expires'; fv[#fv + 1] = expires end
    hset_all(hkey, fv)
    if not expires then redis.call('HDEL', hkey, 'expires') end
    drop_stale(hkey, 'args', args)
    drop_stale(hkey, 'headers', headers)
    place(held, hkey)
    redis.call('SET', ukey, held, 'PX', window)
    return { 2, held }
  end
end

local key = prefix .. id
if redis.call('EXISTS', key) == 1 then return { 0, id } end
local fv = { 'name', name, 'max_retries', ARGV[11], 'timeout_ms', ARGV[12],
  'priority', ARGV[13], 'run_at', due, 'enqueued_at', now }
put_blob(fv, 'args', args)
put_blob(fv, 'headers', headers)
if expires then fv[#fv + 1] = 'expires'; fv[#fv + 1] = expires end
hset_all(key, fv)
place(id, key)
redis.call('HINCRBY', stats, 'enqueued', 1)
redis.call('SET', ukey, id, 'PX', window)
return { 1, id }

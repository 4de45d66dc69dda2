-- promote: move due tasks of one partition from the scheduled set to the ready set, or straight
-- into leases for the calling worker (what BullMQ's moveToActive does: one call instead of a
-- promote, a wake-up and a claim).
--
-- Steps:
--   0. Acks that ride on this call (ARGV[12..], the worker's finished runs of this partition,
--      held back until its next promote instead of a call of their own): each exactly as
--      ack.lua does (ack_one: fenced by its token, result stored, expiry ARGV[10]), removed from
--      the active set, `succeeded` counted, archived when ARGV[9] > 0.
--   1. Read the server clock; take at most ARGV[2] ids whose due time is <= now, earliest first
--      (the first two members are read first: when at most one is due, that read also gives the
--      next head).
--   2. For each: while fewer than ARGV[5] were leased by this call, take it into a lease for the
--      caller exactly as claim.lua does (lease_task: state `scheduled` -> `running`, token and
--      attempts + 1, `worker` = ARGV[7], `started_at`, active set with deadline now + ARGV[6]).
--      A task with a deadline (`expires`) that is passed is neither leased nor moved: it ends
--      `expired` (expire_task: `expired` + 1 in `stats`, its hash kept for ARGV[8] ms, an
--      archive entry when ARGV[9] > 0; with task events on for the queue, ARGV[11] not empty,
--      its `expired` event published on the channel ARGV[11], see publish_event; off: no
--      command more). Beyond that: state `scheduled` -> `ready`, into the
--      ready set scored by priority and due time. Either way the id leaves the scheduled set
--      (one ZADD per target set and one ZREM per batch). An id whose state is another known one (cancelled, or moved on by hand) is only
--      removed from the scheduled set. A record that cannot be read is handled on its own and
--      counted as corrupt: an id whose hash is gone is removed from the scheduled set; a hash
--      whose `state` is absent or not a known state, or (when leased) whose counts cannot be
--      read (see claim.lua), goes to the dead set with the reason (`corrupt record: ...`).
--   3. Publish `r:<shard>` when tasks went to the ready set and the partition's drained flag is
--      not `0` (see wake_ready). Tasks leased to the caller wake nobody.
-- Two promoters racing on one partition cannot move a task twice: this script is atomic and a
-- task leaves the scheduled set in the same step that puts it in the ready or active set.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:scheduled  sorted set  id -> due time (unix ms)
-- KEYS[2] <ns>:{<queue>:<shard>}:ready      sorted set  id -> ready score
-- KEYS[3] <ns>:{<queue>:<shard>}:stats      hash        counters
-- KEYS[4] <ns>:{<queue>:<shard>}:dead       sorted set  id -> time of death (unix ms)
-- KEYS[5] <ns>:{<queue>:<shard>}:drained    string      `1`/absent: the workers stopped claiming
-- KEYS[6] <ns>:{<queue>:<shard>}:active     sorted set  id -> lease deadline (unix ms)
-- KEYS[7] <ns>:{<queue>:<shard>}:archive    stream      finished attempts not archived yet
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:`
-- ARGV[2] batch size (max tasks moved by this call)
-- ARGV[3] wake-up channel, `<ns>:wake:<queue>`
-- ARGV[4] shard number
-- ARGV[5] most tasks to lease to the caller (0: promote only)
-- ARGV[6] lease length (ms)
-- ARGV[7] the lease's tag, `<worker id>#<claim number>`, stored as `worker` (as in claim.lua)
-- ARGV[8] how long the record of an expired task is kept (ms; 0 deletes it)
-- ARGV[9] archive bound (entries kept in KEYS[7] at most); 0 = archive off
-- ARGV[10] result TTL of the acks (ms); 0 deletes the task hash on success
-- ARGV[11] task events channel <ns>:events:<queue>, or empty when the queue's events are off
-- ARGV[12..] acks, 3 values each: id, token, result (MessagePack bytes, or empty); none: none
--
-- Output: { moved to the ready set, next due time (unix ms) or -1 when nothing is scheduled,
--           server now (unix ms), server now (unix microseconds, for callers that time their
--           next call precisely), corrupt (records that could not be read: ids without a hash
--           dropped, plus hashes buried), expired (tasks past their deadline, ended `expired`),
--           the acks' codes (an array, one per ack as ack.lua replies: 1 acknowledged, -1 stale
--           lease), then 9 values per task leased to the caller, as
--           claim.lua returns them: id, token, attempts, name, args, max retries, timeout (ms),
--           due time (unix ms), lost leases }
local sched, ready, stats, dead, drained, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6]
local prefix, batch, channel, shard = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local want, lease, worker = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local expired_ttl, bound, events = ARGV[8], tonumber(ARGV[9]), ARGV[11]
local us = now_us()
local now = math.floor(us / 1000)
local acked, archived = {}, {}
if #ARGV > 11 then
  local ttl, removed = tonumber(ARGV[10]), {}
  for i = 12, #ARGV, 3 do
    local id = ARGV[i]
    local code = ack_one(prefix .. id, id, ARGV[i + 1], ARGV[i + 2], now, ttl, bound, archived)
    if code == 1 then removed[#removed + 1] = id end
    acked[#acked + 1] = math.min(code, 1)
  end
  if #removed > 0 then
    zrem_all(active, removed)
    redis.call('HINCRBY', stats, 'succeeded', #removed)
  end
end
-- The first two members tell, in one read, whether more than one is due and, when at most one
-- is (a steady flow of precisely timed tasks), the next head: no second read for it.
local first = redis.call('ZRANGE', sched, 0, 1, 'WITHSCORES')
local due, next_head
if first[4] and tonumber(first[4]) <= now and batch > 1 then
  due = redis.call('ZRANGEBYSCORE', sched, '-inf', now, 'WITHSCORES', 'LIMIT', 0, batch)
elseif first[2] and tonumber(first[2]) <= now then
  due = { first[1], first[2] }
  next_head = tonumber(first[4] or -1)
else
  due = {}
  next_head = tonumber(first[2] or -1)
end
local out = { 0, -1, now, us, 0, 0, acked }
local moved, leased_n, corrupt, expired = 0, 0, 0, 0
if #due > 0 then
  local ids, pairs, leased = {}, {}, {}
  for i = 1, #due, 2 do
    local id = due[i]
    local key = prefix .. id
    ids[#ids + 1] = id
    local take = leased_n < want
    local f
    if take then
      f = redis.call('HMGET', key, unpack(LEASE_FIELDS))
    else
      f = redis.call('HMGET', key, 'state', 'priority', 'expires')
    end
    local why
    local deadline
    if take then deadline = f[13] else deadline = f[3] end
    if deadline and f[1] == SCHEDULED and past_deadline(deadline, now) then
      local why = 'deadline ' .. deadline .. ' passed before the task started'
      -- Its runs so far (before expire_task, which may delete the hash): events on only.
      local attempt
      if events ~= '' then
        if take then attempt = f[7] else attempt = redis.call('HGET', key, 'attempts') end
      end
      expire_task(key, id, stats, now, why, expired_ttl, bound, archived)
      expired = expired + 1
      if events ~= '' then publish_event(events, 'expired', id, attempt, now, why) end
    elseif f[1] == SCHEDULED then
      if take then
        why = lease_task(key, id, f, now, now + lease, worker, out, leased)
        if not why then leased_n = leased_n + 1 end
      else
        redis.call('HSET', key, 'state', READY)
        pairs[#pairs + 1] = ready_score(f[2], tonumber(due[i + 1]))
        pairs[#pairs + 1] = id
        moved = moved + 1
      end
    elseif not STATES[f[1]] or IN_A_SET[f[1]] then
      if f[1] or redis.call('EXISTS', key) == 1 then
        why = 'state ' .. shown(f[1])
      else
        corrupt = corrupt + 1
      end
    end
    if why then
      bury_corrupt(key, dead, id, now, why)
      corrupt = corrupt + 1
    end
  end
  zadd_all(ready, pairs)
  zadd_all(active, leased)
  zrem_all(sched, ids)
  if moved + leased_n > 0 then redis.call('HINCRBY', stats, 'promoted', moved + leased_n) end
  if moved > 0 then wake_ready(drained, channel, shard) end
end
out[1] = moved
out[2] = next_head or head_of(sched)
out[5] = corrupt
out[6] = expired
if bound > 0 then archive_push(KEYS[7], stats, bound, archived) end
return out

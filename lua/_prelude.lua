-- Shared prelude, prepended to every script of lua/ at build time (see scheduler-core/src/scripts.rs).
-- One clock decides when a task is due: the Redis server's. Hosts' clocks are never consulted.
-- Redis 7 replicates script effects, so reading TIME before writing is safe on replicas and AOF.
-- Server time in microseconds (about 1.8e15: an exact integer in a Lua double).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Server time in unix milliseconds, the unit of every score and time field.
local function now_ms()
  return math.floor(now_us() / 1000)
end

-- The integer in `v` (a hash value or an argument), or nil when `v` is absent or not an
-- integer of at most 15 digits: `abc`, `nan`, `inf`, `2.5`, `1e300` (beyond 15 digits, not every
-- integer is exact in a Lua double). Comparing tonumber()'s nil, or a NaN, would fail a script.
-- `1e3` and `0x10` read as 1000 and 16: integers, written unusually. (tonumber and two
-- comparisons: a pattern match per field cost the claim script 2.5 µs per task.)
local function int_of(v)
  local n = tonumber(v)
  if n and n % 1 == 0 and n < 1e15 and n > -1e15 then return n end
  return nil
end

-- Score of a task in a ready sorted set: higher priority first (0..9), then older first.
-- Priorities 0..9 are offsets of 1e13 ms (~317 years); every score stays an exact integer.
-- A priority that is not an integer 0..9 (a record edited by hand) counts as 0, so one bad
-- record cannot make a whole batch fail.
local function ready_score(priority, t)
  local p = tonumber(priority)
  if not p or p ~= p or p < 0 or p > 9 then p = 0 end
  return (9 - math.floor(p)) * 1e13 + t
end

-- Publishes `r:<shard>` on `channel` after the caller added tasks to the ready set, unless the
-- partition's drained flag (KEY `flag`, see claim.lua) says `0`: the workers are still claiming
-- from it (their last claim got a full batch). Absent or `1` (a claim found the set empty, so
-- the workers stopped looking): publish. Then the flag is `0`. One command when nothing is
-- published. Unlike a ZCARD before the add, a member no worker will ever claim cannot keep
-- this from firing.
local function wake_ready(flag, channel, shard)
  -- A read first: in steady flow the flag is already 0, and a write on every call would cost a
  -- microsecond more and be replicated.
  if redis.call('GET', flag) ~= '0' then
    redis.call('SET', flag, '0')
    redis.call('PUBLISH', channel, 'r:' .. shard)
  end
end

-- Task states, spelled as `TaskState::as_str` spells them (a test in info.rs checks that
-- they agree); one block each, so that a script carries only those it uses.
local SCHEDULED = 'scheduled'

local READY = 'ready'

local RUNNING = 'running'

local SUCCEEDED = 'succeeded'

local DEAD = 'dead'

local CANCELLED = 'cancelled'

local EXPIRED = 'expired'

-- States a task record can be in.
local STATES = { [SCHEDULED] = true, [READY] = true, [RUNNING] = true, [SUCCEEDED] = true,
  [DEAD] = true, [CANCELLED] = true, [EXPIRED] = true }

-- States whose record must sit in a sorted set (scheduled, ready, active for running, dead). A
-- member of one set whose record names another of these was damaged: dropping it from the set
-- would leave the task in no set (never run, or never reaped), so it is buried with its state.
local IN_A_SET = { [SCHEDULED] = true, [READY] = true, [RUNNING] = true, [DEAD] = true }

-- Moves a task whose record cannot be read (a field deleted or overwritten by hand) to the dead
-- set, with the reason in `error`: state `dead`, `finished_at` now, `worker` removed. The caller
-- removes the id from the set it was in, and reports it in its reply (the `corrupt` count).
local function bury_corrupt(key, dead, id, now, why)
  redis.call('HSET', key, 'state', DEAD, 'finished_at', now, 'error', 'corrupt record: ' .. why)
  redis.call('HDEL', key, 'worker')
  redis.call('ZADD', dead, now, id)
end

-- Ends task `key` in the final state `state` (`cancelled` or `expired`, which is also the name of
-- its counter: + 1 in `stats`): `finished_at` now, `error` = `why`, `worker` and `cancel`
-- removed, the hash expires after `ttl` ms (0 or unreadable: deleted). The caller removes the id
-- from the set it was in.
local function end_task(key, stats, state, now, why, ttl)
  redis.call('HINCRBY', stats, state, 1)
  local ms = tonumber(ttl) or 0
  if ms <= 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('HSET', key, 'state', state, 'finished_at', now, 'error', why)
  redis.call('HDEL', key, 'worker', 'cancel')
  redis.call('PEXPIRE', key, math.floor(ms))
end

-- Ends a running task whose cancellation was requested (cancel.lua wrote `cancel` = the TTL, ms,
-- of a cancelled task's hash): end_task as `cancelled`, `error` = `why` (what became of the
-- run). The caller removes the id from the active set.
local function cancel_running(key, stats, now, ttl, why)
  end_task(key, stats, CANCELLED, now, why, ttl)
end

-- Publishes the task event `kind` of run `attempt` (nil: 0) of task `id`, with `detail`, on
-- `channel` (`<ns>:events:<queue>`), in the form of scheduler_core::events::TaskEvent. Called
-- only when the queue's events are on (the caller was given its channel): off, no command.
local function publish_event(channel, kind, id, attempt, now, detail)
  redis.call('PUBLISH', channel, kind .. '\n' .. id .. '\n' .. (attempt or 0) .. '\n' .. now
    .. '\n' .. detail)
end

-- A field's value for a reason text: quoted, at most 40 bytes.
local function shown(v)
  if not v then return 'absent' end
  return string.format('%q', string.sub(v, 1, 40))
end

-- Head (earliest due time, unix ms) of a scheduled sorted set, or -1 when it is empty.
local function head_of(zkey)
  local h = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if h[2] then return tonumber(h[2]) end
  return -1
end

-- ZREM of many members, in chunks: Lua's unpack() fails beyond ~8000 values.
local function zrem_all(zkey, ids)
  for i = 1, #ids, 1000 do
    redis.call('ZREM', zkey, unpack(ids, i, math.min(i + 999, #ids)))
  end
end

-- ZADD of many (score, member) pairs given flat in `pairs`, in chunks: one command per 500 pairs
-- instead of one per task.
local function zadd_all(zkey, pairs)
  for i = 1, #pairs, 1000 do
    redis.call('ZADD', zkey, unpack(pairs, i, math.min(i + 999, #pairs)))
  end
end

-- HSET of many field/value pairs given flat in `fv`, in chunks: a blob of 1 MiB is 16,384
-- pieces, 32,768 values, far beyond what one unpack() takes.
local function hset_all(key, fv)
  if #fv <= 1000 then
    redis.call('HSET', key, unpack(fv))
    return
  end
  for i = 1, #fv, 1000 do
    redis.call('HSET', key, unpack(fv, i, math.min(i + 999, #fv)))
  end
end

-- Binary values (args, result) are stored in pieces of at most 64 bytes: `args`, `args:1`,
-- `args:2`, ... A hash whose every value fits in 64 bytes (Redis' default
-- hash-max-listpack-value) stays listpack-encoded: about half the memory of a hashtable.
local PIECE = 64

-- Appends to `fv` the field/value pairs that store `v` under `field` (nothing for an empty value).
local function put_blob(fv, field, v)
  if v == '' then return end
  fv[#fv + 1] = field
  fv[#fv + 1] = string.sub(v, 1, PIECE)
  local n = 1
  for i = PIECE + 1, #v, PIECE do
    fv[#fv + 1] = field .. ':' .. n
    fv[#fv + 1] = string.sub(v, i, i + PIECE - 1)
    n = n + 1
  end
end

-- The whole value stored by put_blob, given its first two pieces as read by the caller's HMGET
-- of `field` and `field:1` (false when absent). Reads further pieces only for values over 128
-- bytes, 256 pieces per HMGET.
local function get_blob(key, field, first, second)
  if not first then return '' end
  if #first < PIECE or not second then return first end
  if #second < PIECE then return first .. second end
  local parts = { first, second }
  local n = 2
  while true do
    local names = {}
    for j = n, n + 255 do names[#names + 1] = field .. ':' .. j end
    local got = redis.call('HMGET', key, unpack(names))
    for j = 1, #got do
      local p = got[j]
      if not p then return table.concat(parts) end
      parts[#parts + 1] = p
      if #p < PIECE then return table.concat(parts) end
    end
    n = n + 256
  end
end

-- The fields a claim reads of a task record, in this order: `f` of lease_task.
local LEASE_FIELDS = { 'state', 'name', 'args', 'args:1', 'run_at', 'token', 'attempts', 'lost',
  'max_retries', 'timeout_ms', 'headers', 'headers:1', 'expires' }


-- Takes the task `id` (hash `key`, fields `f` read by HMGET of LEASE_FIELDS, its state already
-- checked by the caller) into a lease for `worker` until `deadline`: fencing token and attempts
-- + 1 (both absent, i.e. 0, before the first claim), state `running`, `worker`, `started_at`.
-- Appends the 9 reply values (id, token, attempts, name, args, max retries, timeout, due time,
-- lost) to `out`; a task with headers (the `headers` field, in pieces like `args`) has
-- { args, headers } in place of args, so a task without adds not a byte to the reply and (deadline, id) to `leased` (the caller adds those to the active set).
-- Returns nil, or, writing nothing, why the record cannot be read: `token`, `attempts`, `lost`
-- (absent: 0), `max_retries` or `timeout_ms` not an integer >= 0 (`<field> <value>`). An
-- unreadable `run_at` is repaired in the reply only: the due time is `now` (informational).
local function lease_task(key, id, f, now, deadline, worker, out, leased)
  -- Fast path, no function call but tonumber: every count an integer in [0, 1e15).
  local token, attempts, lost = tonumber(f[6] or 0), tonumber(f[7] or 0), tonumber(f[8] or 0)
  local retries, timeout = tonumber(f[9]), tonumber(f[10])
  if not (token and attempts and lost and retries and timeout
      and token % 1 == 0 and attempts % 1 == 0 and lost % 1 == 0 and retries % 1 == 0
      and timeout % 1 == 0 and token >= 0 and attempts >= 0 and lost >= 0 and retries >= 0
      and timeout >= 0 and token < 1e15 and attempts < 1e15 and lost < 1e15
      and retries < 1e15 and timeout < 1e15) then
    local names = { [6] = 'token', [7] = 'attempts', [8] = 'lost', [9] = 'max_retries' }
    for i = 6, 9 do
      local n = int_of(f[i])
      if not ((i <= 8 and not f[i]) or (n and n >= 0)) then return names[i] .. ' ' .. shown(f[i]) end
    end
    return 'timeout_ms ' .. shown(f[10])
  end
  token = token + 1
  attempts = attempts + 1
  redis.call('HSET', key, 'state', RUNNING, 'token', token, 'attempts', attempts,
    'worker', worker, 'started_at', now)
  leased[#leased + 1] = deadline
  leased[#leased + 1] = id
  out[#out + 1] = id
  out[#out + 1] = token
  out[#out + 1] = attempts
  out[#out + 1] = f[2] or ''
  local args = get_blob(key, 'args', f[3], f[4])
  if f[11] then args = { args, get_blob(key, 'headers', f[11], f[12]) } end
  out[#out + 1] = args
  out[#out + 1] = retries
  out[#out + 1] = timeout
  out[#out + 1] = int_of(f[5]) or now
  out[#out + 1] = lost
  return nil
end

-- The task history archive (docs/storage.md): a finishing script given an archive bound > 0
-- (ARGV, 0 = off: then none of this runs and the script costs no command more) appends one
-- entry per finished attempt to the partition's archive stream. This builds the entry of task
-- `id` (hash `key`, read before the script changes or deletes it) as the flat field/value list
-- XADD takes: id, name, state, attempt, times (unix ms; empty when unknown), worker, error,
-- result and args (MessagePack bytes, whole).
local function archive_entry(key, id, state, now, err, result)
  local f = redis.call('HMGET', key, 'name', 'attempts', 'enqueued_at', 'started_at', 'worker',
    'args', 'args:1')
  return { 'id', id, 'name', f[1] or '', 'state', state, 'attempt', f[2] or '0',
    'enqueued_at', f[3] or '', 'started_at', f[4] or '', 'finished_at', now,
    'worker', f[5] or '', 'error', err or '', 'result', result or '',
    'args', get_blob(key, 'args', f[6], f[7]) }
end

-- Appends `entries` (lists built by archive_entry) to the archive stream `stream`, in order,
-- then trims it to its `bound` newest entries: the oldest beyond the bound (archived or not:
-- the archiver deletes what it stored, so only unarchived entries are left) are dropped and
-- counted in `archive_dropped` of the `stats` hash. XLEN + one XADD per entry; XTRIM and
-- HINCRBY only when over the bound.
local function archive_push(stream, stats, bound, entries)
  if #entries == 0 then return end
  local len = redis.call('XLEN', stream)
  for i = 1, #entries do
    redis.call('XADD', stream, '*', unpack(entries[i]))
  end
  local over = len + #entries - bound
  if over > 0 then
    redis.call('XTRIM', stream, 'MAXLEN', bound)
    redis.call('HINCRBY', stats, 'archive_dropped', over)
  end
end

-- The attempt log of a task record (field `attempt_log`): a JSON array of its last 10 failed
-- attempts, oldest first, each `{"attempt", "started_at", "failed_at", "worker", "error"}`
-- (times unix ms, `started_at` absent when unknown, `error` cut to 200 bytes). Written by
-- retry.lua and reap.lua in the HSET they make anyway, from fields their HMGET reads anyway:
-- no command more (and only those scripts carry this block). `old` is the field's value (nil
-- when absent); an unreadable one (a hand edit) starts a new log. Returns the new value.
local function log_attempt(old, attempt, started, now, worker, err)
  local keep, error_max = 10, 200
  local log = {}
  if old then
    local ok, v = pcall(cjson.decode, old)
    if ok and type(v) == 'table' then log = v end
  end
  log[#log + 1] = { attempt = attempt, started_at = int_of(started), failed_at = now,
    worker = worker or '', error = string.sub(err, 1, error_max) }
  while #log > keep do table.remove(log, 1) end
  return cjson.encode(log)
end

-- Whether a task whose `expires` field (its deadline, unix ms; absent: none) is `e` may no
-- longer start at `now`: it has a deadline and the deadline is passed. An unreadable deadline
-- (a hand edit) counts as none: the task runs rather than vanish.
local function past_deadline(e, now)
  if not e then return false end
  local d = tonumber(e)
  return d ~= nil and d < now
end

-- Ends a task that cannot start by its deadline: end_task as `expired`, `error` = `why`. With
-- the archive on (`bound` > 0) its entry is appended to `archived` first (archive_entry, before
-- the hash changes; the caller pushes them). The caller removes the id from the set it was in.
local function expire_task(key, id, stats, now, why, ttl, bound, archived)
  if bound > 0 then archived[#archived + 1] = archive_entry(key, id, EXPIRED, now, why, nil) end
  end_task(key, stats, EXPIRED, now, why, ttl)
end

-- Acknowledges task `id` (hash `key`) as succeeded under lease `token` (a string, as given) with
-- `result` (MessagePack bytes, or empty): the step ack.lua makes for each task, and promote.lua
-- for the acks that ride on it. Returns 1 when acknowledged now (the caller removes the id from
-- the active set and counts `succeeded`), 2 when it was already `succeeded` under this token (a
-- retried call whose first reply was lost: nothing changes), -1 when the lease is stale (not
-- `running` under this token: nothing changes). State `succeeded`, `finished_at`, the result in
-- pieces (put_blob; the `worker` field stays: who ran it); the hash expires after `ttl` ms (0
-- deletes it). With the archive on (`bound` > 0) the entry is appended to `archived` first.
local function ack_one(key, id, token, result, now, ttl, bound, archived)
  local f = redis.call('HMGET', key, 'state', 'token')
  if f[2] ~= token or (f[1] ~= RUNNING and f[1] ~= SUCCEEDED) then return -1 end
  if f[1] == SUCCEEDED then return 2 end
  if bound > 0 then
    archived[#archived + 1] = archive_entry(key, id, SUCCEEDED, now, nil, result)
  end
  if ttl > 0 then
    local fv = { 'state', SUCCEEDED, 'finished_at', now }
    put_blob(fv, 'result', result)
    hset_all(key, fv)
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('DEL', key)
  end
  return 1
end

-- export_page: read one page of one set of a partition, with every task's record, atomically.
--
-- Steps:
--   1. Find where the page starts. No cursor: at rank 0. With a cursor (the score and id of the
--      last member of the previous page): just after that member when it is still in the set
--      (ZRANK); when it has left the set, after every member that sorts before it: those with a
--      lower score (ZCOUNT), then, among the members with the cursor's score (Redis orders
--      them by their bytes), those whose id is not greater than the cursor's (a binary search
--      over that run of ranks, one ZRANGE of one member per step: log2 of the run).
--   2. Read at most `limit` members from there, with their scores (ZRANGE by rank).
--   3. Read each member's task record whole (HGETALL); a member without a record gets an
--      empty array (the caller skips it).
-- Nothing is written. The page is one atomic read: each record agrees with the set it was
-- found in. The loop is bounded by `limit`; the search by log2 of the set's size.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:<set>   sorted set  scheduled, ready, active or dead
-- ARGV[1] task key prefix, `<ns>:{<queue>:<shard>}:t:` (the task hash is prefix .. id)
-- ARGV[2] cursor score, as the previous page returned it ('' for the first page)
-- ARGV[3] cursor id ('' for the first page)
-- ARGV[4] limit: the most members to return (1..1000)
--
-- Output: an array with three values per member, in set order: the id, its score (the string
--         Redis gives for it), and the record's fields and values as HGETALL gives them.
local set, prefix = KEYS[1], ARGV[1]
local cursor_score, cursor_id, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])

-- Byte order of two strings, as Redis orders members of equal score (memcmp), whatever the
-- server's locale does to Lua's `<`.
local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local start = 0
if cursor_id ~= '' then
  local r = redis.call('ZRANK', set, cursor_id)
  if r then
    start = r + 1
  else
    local lo = redis.call('ZCOUNT', set, '-inf', '(' .. cursor_score)
    local hi = lo + redis.call('ZCOUNT', set, cursor_score, cursor_score)
    -- First rank in [lo, hi) whose member sorts after the cursor id; hi when none does.
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local m = redis.call('ZRANGE', set, mid, mid)[1]
      if bytes_less(cursor_id, m) then hi = mid else lo = mid + 1 end
    end
    start = lo
  end
end

local page = redis.call('ZRANGE', set, start, start + limit - 1, 'WITHSCORES')
local out = {}
for i = 1, #page, 2 do
  local id = page[i]
  out[#out + 1] = id
  out[#out + 1] = page[i + 1]
  out[#out + 1] = redis.call('HGETALL', prefix .. id)
end
return out

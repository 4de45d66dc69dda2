-- archive_done: forget archive entries stored in the history archive (PostgreSQL), or dropped.
--
-- Steps: XACK the ids in the consumer group (out of the pending list of whichever archiver read
-- them), then XDEL them from the stream, in one atomic step: an entry is never left acknowledged
-- yet still in the stream (where it would count against the bound forever). Ids already gone
-- (done by another archiver) are no error. When ARGV[2] is 1 (the entries were stored), an
-- entry acknowledged here but no longer in the stream was trimmed over the bound after the
-- archiver read it, and counted in `archive_dropped`: stored after all, it is taken off that
-- count, so that `archive_dropped` counts exactly the finished attempts never stored.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:archive  stream  finished attempts not archived yet
-- KEYS[2] <ns>:{<queue>:<shard>}:stats    hash    counters (`archive_dropped`)
-- ARGV[1] consumer group (`archivers`)
-- ARGV[2] 1: the entries were stored; 0: they were found trimmed (dropped)
-- ARGV[3..] stream entry ids
--
-- Output: the number of entries deleted from the stream.
local stream, stats, group = KEYS[1], KEYS[2], ARGV[1]
local acked, n = 0, 0
for i = 3, #ARGV, 500 do
  local last = math.min(i + 499, #ARGV)
  acked = acked + redis.call('XACK', stream, group, unpack(ARGV, i, last))
  n = n + redis.call('XDEL', stream, unpack(ARGV, i, last))
end
if ARGV[2] == '1' and acked > n then
  redis.call('HINCRBY', stats, 'archive_dropped', n - acked)
end
return n

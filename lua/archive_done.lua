-- archive_done: forget archive entries stored in the history archive (PostgreSQL).
--
-- Steps: XACK the ids in the consumer group (out of the pending list of whichever archiver read
-- them), then XDEL them from the stream, in one atomic step: an entry is never left acknowledged
-- yet still in the stream (where it would count against the bound forever). Ids already gone
-- (trimmed, or done by another archiver) are no error.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:archive  stream  finished attempts not archived yet
-- ARGV[1] consumer group (`archivers`)
-- ARGV[2..] stream entry ids
--
-- Output: the number of entries deleted from the stream.
local stream, group = KEYS[1], ARGV[1]
local n = 0
for i = 2, #ARGV, 500 do
  local last = math.min(i + 499, #ARGV)
  redis.call('XACK', stream, group, unpack(ARGV, i, last))
  n = n + redis.call('XDEL', stream, unpack(ARGV, i, last))
end
return n

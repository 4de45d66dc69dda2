-- lock_release: delete a promoter lock, only if we still hold it (compare-and-delete).
--
-- KEYS[1] <ns>:{<queue>:<shard>}:lock  string  holder's token
-- ARGV[1] our token
--
-- Output: 1 released, 0 not held by us.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

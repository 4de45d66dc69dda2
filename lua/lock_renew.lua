-- lock_renew: extend a promoter lock, only if we still hold it.
--
-- KEYS[1] <ns>:{<queue>:<shard>}:lock  string  holder's token
-- ARGV[1] our token
-- ARGV[2] lock TTL (ms)
--
-- Output: 1 renewed, 0 not held by us (expired, or taken by another promoter).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0

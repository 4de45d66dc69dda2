-- wf_create: writes a workflow's record (docs/workflows.md), unless it exists: starting the same
-- workflow id again (a producer retrying after a lost reply) changes nothing.
--
-- KEYS[1] <ns>:wf:{<id>}   hash   the workflow record (fields in docs/redis-layout.md)
-- ARGV[1..] field/value pairs of the record; `created_at` (server time) is added
--
-- Output: 1 created, 0 it existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fv = { 'created_at', now_ms() }
for i = 1, #ARGV do fv[#fv + 1] = ARGV[i] end
hset_all(KEYS[1], fv)
return 1

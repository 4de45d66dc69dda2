-- limit_extend: keep the concurrency slots of runs that go on (docs/flow-control.md): each
-- holder still present gets deadline now + ARGV[1], like its task's lease (extend.lua). A
-- holder that is gone (dropped after its deadline passed: the worker was cut off longer than a
-- lease) is not added back.
--
-- KEYS[1] <ns>:{lim:<digest>}:run  sorted set  holder -> lease deadline (unix ms)
-- ARGV[1] lease length (ms)
-- ARGV[2..] holders
--
-- Output: how many holders were extended.
local run, lease = KEYS[1], tonumber(ARGV[1])
local deadline = now_ms() + lease
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', run, 'XX', 'CH', deadline, ARGV[i])
end
return n

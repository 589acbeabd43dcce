-- Replaces a leader's value, fenced by its token. ARGV: P, name, sid, token, value.
-- Reply: 1 written, 0 the entry is gone.
local Q = queue('elect', ARGV[2])
local sid, token, value = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local score = redis.call('ZSCORE', Q.q, sid)
if not score or tonumber(score) ~= token then return 0 end
local before = leader_of(Q)
local record = redis.call('HGET', Q.e, sid)
redis.call('HSET', Q.e, sid, string.sub(record, 1, 2) .. value)
announce(Q, before)
return 1

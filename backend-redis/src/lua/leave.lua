-- Removes a session's entry: a release, a cancelled wait. Fenced: only the entry with `token`
-- ('0': whichever the session has, for a wait whose queuing reply was lost).
-- ARGV: P, kind, name, sid, token. Reply: 1 removed, 0 not there (already gone).
local Q = queue(ARGV[2], ARGV[3])
local sid, token = ARGV[4], tonumber(ARGV[5])
local score = redis.call('ZSCORE', Q.q, sid)
if not score or (token ~= 0 and tonumber(score) ~= token) then return 0 end
local before = leader_of(Q)
remove(Q, sid)
settle(Q, '')
announce(Q, before)
return 1

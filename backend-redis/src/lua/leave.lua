-- Removes a session's entry: a release, a cancelled wait. Fenced: only the entry with `token`
-- ('0': whichever the session has, for a wait whose queuing reply was lost).
-- ARGV: P, kind, name, sid, token. Reply: 1 removed, 0 not there (already gone).
-- (leave_alone.lua, before, has checked the fence, and removed the entry unless it is an
-- election's, whose leader is read first; it has ended the script if the queue is left empty.)
local before = leader_of(Q)
if Q.kind == 'elect' then remove(Q, sid) end
settle(Q, '')
announce(Q, before)
return 1

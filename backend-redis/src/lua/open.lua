-- Opens a session: its key and its (empty) index, both with the TTL. ARGV: P, sid, ttl.
-- A retry after a lost reply finds them made. Reply: 1.
local sid, ttl = ARGV[2], ARGV[3]
redis.call('SET', session_key(sid), '1', 'PX', ttl, 'NX')
redis.call('HSET', entries_key(sid), '', '0')
redis.call('PEXPIRE', entries_key(sid), ttl)
return 1

-- distlock's Redis layout, shared by every script (prepended to each one): the keys, and the
-- writes of an entry. The grant rules and the queue's walk are in rules.lua, prepended only to
-- the scripts that walk a queue, and there after the path that needs no walk: every Lua function
-- a script defines costs the server time on every call. ARGV[1] is the key prefix P, ending in
-- ':'.
--   P s:<sid>           a session; exists while it lives (PX = the session's TTL)
--   P h:<sid>           the session's entries: queue key -> token, and a field '' made with the
--                       session so that the hash always has the session's TTL (renewed with it)
--   P q:<kind>:<name>   a queue (kind: lock, elect, rw, sem): sorted set, member = session id,
--                       score = token; it lives as long as the longest-lived session in it (each
--                       session's queuing and keepalive extend it), so a queue whose sessions all
--                       died without a word goes with them
--   P e:<kind>:<name>   its records: hash, session id -> recipe char, granted flag ('0'/'1'), value
--                       (the same life as the queue)
--   P t:<name>          the name's token counter: INCR per entry, never reset, never expires
-- Channels: P w:<sid> tells a session of its entries' grants ('g <token> <queue key>');
-- P l:<name> tells an election's observers of its leader ('<token> <value>', '' for none).
-- Granted entries are always a prefix of the queue: entries are only ever removed, never moved.
local P = ARGV[1]

local function session_key(sid) return P .. 's:' .. sid end
local function entries_key(sid) return P .. 'h:' .. sid end

local function queue(kind, name)
  return { q = P .. 'q:' .. kind .. ':' .. name, e = P .. 'e:' .. kind .. ':' .. name, kind = kind, name = name }
end

-- The queue a queue key names.
local function queue_of(key)
  local kind, name = string.match(string.sub(key, #P + 3), '^(%l+):(.*)$')
  return queue(kind, name)
end

local function token_text(token) return string.format('%d', tonumber(token)) end

-- Makes `key` live at least `ttl` ms more.
local function extend(key, ttl)
  if redis.call('PTTL', key) < tonumber(ttl) then redis.call('PEXPIRE', key, ttl) end
end

local function remove(Q, sid)
  redis.call('ZREM', Q.q, sid)
  redis.call('HDEL', Q.e, sid)
  redis.call('HDEL', entries_key(sid), Q.q)
end

-- Adds `sid`'s entry with `record` (recipe char, granted flag, value) and the name's next token,
-- which it returns; the queue lives at least `ttl` ms more (`fresh`: the queue is new, so it has
-- no expiry yet).
local function add(Q, sid, record, ttl, fresh)
  local token = redis.call('INCR', P .. 't:' .. Q.name)
  redis.call('ZADD', Q.q, token, sid)
  redis.call('HSET', Q.e, sid, record)
  redis.call('HSET', entries_key(sid), Q.q, token)
  if fresh then
    redis.call('PEXPIRE', Q.q, ttl)
    redis.call('PEXPIRE', Q.e, ttl)
  else
    extend(Q.q, ttl)
    extend(Q.e, ttl)
  end
  return token
end

-- Tells an election's observers of its leader: '<token> <value>' (see leader_text), '' for none.
local function tell_observers(Q, leader) redis.call('PUBLISH', P .. 'l:' .. Q.name, leader) end

-- What an election's observers hear of a leader: '<token> <value>'.
local function leader_text(token, value) return token_text(token) .. ' ' .. value end

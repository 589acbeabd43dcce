-- Queues a session for a name, or looks at its entry again.
-- ARGV: P, kind, name, sid, mode ('queue' | 'try' | 'check'), recipe char, value.
-- 'queue' adds the entry unless the session has one (a retry after a lost reply finds it);
-- 'try' adds it but removes it again unless granted at once; 'check' only looks.
-- Replies: token (an integer: granted) | {'waiting', token, ms} (ms: when an entry it waits behind could
-- die with its session, the time to check again) | {'busy'} | {'gone'} | {'expired'} |
-- {'permits', number the queue's entries carry}.
local Q = queue(ARGV[2], ARGV[3])
local sid, mode, recipe, value = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
-- The session's remaining life (-2: gone, so expired); its queues live at least as long.
local session_ttl = redis.call('PTTL', session_key(sid))
if session_ttl == -2 then return { 'expired' } end
local before = leader_of(Q)
-- Adds the entry; the queue lives at least as long as the session (`fresh`: the queue is new).
local function add(granted, fresh)
  local token = redis.call('INCR', P .. 't:' .. Q.name)
  redis.call('ZADD', Q.q, token, sid)
  redis.call('HSET', Q.e, sid, recipe .. granted .. value)
  redis.call('HSET', entries_key(sid), Q.q, token)
  if fresh then
    redis.call('PEXPIRE', Q.q, session_ttl)
    redis.call('PEXPIRE', Q.e, session_ttl)
  else
    extend(Q.q, session_ttl)
    extend(Q.e, session_ttl)
  end
  return token_text(token)
end
-- An empty queue: the entry holds at once (the path of every uncontended lock).
if mode ~= 'check' and redis.call('ZCARD', Q.q) == 0 then
  local token = add('1', true)
  announce(Q, before)
  return tonumber(token)
end
local token = redis.call('ZSCORE', Q.q, sid)
if not token then
  if mode == 'check' then return { 'gone' } end
  if recipe == 'P' then
    -- Dead entries go first, so that the permits compared are a live holder's (the settle
    -- below, with our entry in the queue, does this for the other recipes).
    settle(Q, sid)
    local head = redis.call('ZRANGE', Q.q, 0, 0)
    local record = head[1] and redis.call('HGET', Q.e, head[1])
    if record and string.sub(record, 3) ~= value then return { 'permits', string.sub(record, 3) } end
  end
  token = add('0', false)
else
  token = token_text(token)
end
-- Up to a few rounds: each finds the entries this one waits behind; dead ones are removed,
-- which may admit it.
for _ = 1, 8 do
  settle(Q, sid)
  if is_granted(redis.call('HGET', Q.e, sid)) then
    announce(Q, before)
    return tonumber(token)
  end
  if mode == 'try' then
    remove(Q, sid)
    settle(Q, sid)
    announce(Q, before)
    return { 'busy' }
  end
  -- The first waiter may be admitted by any entry ahead going; a later one waits for its
  -- predecessor to go (then it looks again, perhaps as the first waiter).
  local rank = redis.call('ZRANK', Q.q, sid)
  local predecessor = redis.call('ZRANGE', Q.q, rank - 1, rank - 1)
  local watched = predecessor
  if is_granted(redis.call('HGET', Q.e, predecessor[1]) or '') then
    watched = redis.call('ZRANGE', Q.q, 0, math.min(rank, 64) - 1)
  end
  local soonest, dead = nil, {}
  for _, other in ipairs(watched) do
    local ttl = redis.call('PTTL', session_key(other))
    if ttl == -2 then
      table.insert(dead, other)
    elseif ttl >= 0 and (not soonest or ttl < soonest) then
      soonest = ttl
    end
  end
  if #dead == 0 then
    announce(Q, before)
    return { 'waiting', token, soonest or 1000 }
  end
  for _, other in ipairs(dead) do remove(Q, other) end
end
announce(Q, before)
return { 'waiting', token, 0 }

-- Reads queues: those of ARGV[2..] (queue keys), or every non-empty one when none is given.
-- Reply: {queue key, {sid, token, record, ...}, ...}, live entries only, in queue order.
local keys = {}
for i = 2, #ARGV do table.insert(keys, ARGV[i]) end
if #keys == 0 then keys = redis.call('SMEMBERS', P .. 'queues') end
local reply = {}
for _, key in ipairs(keys) do
  local Q = queue_of(key)
  local listed = {}
  local members = redis.call('ZRANGE', Q.q, 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local record = redis.call('HGET', Q.e, members[i])
    if record and redis.call('EXISTS', session_key(members[i])) == 1 then
      table.insert(listed, members[i])
      table.insert(listed, token_text(members[i + 1]))
      table.insert(listed, record)
    end
  end
  if #listed > 0 then
    table.insert(reply, key)
    table.insert(reply, listed)
  end
end
return reply

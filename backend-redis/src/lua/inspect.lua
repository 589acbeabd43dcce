-- Reads the queues ARGV[2..] (queue keys). Reply: {queue key, {sid, token, record, ...}, ...}
-- for each that has live entries, in queue order; records left without an entry (an operator's
-- ZREM) are removed on the way.
local reply = {}
for i = 2, #ARGV do
  local Q = queue_of(ARGV[i])
  local listed = {}
  local members = redis.call('ZRANGE', Q.q, 0, -1, 'WITHSCORES')
  for j = 1, #members, 2 do
    local record = redis.call('HGET', Q.e, members[j])
    if record and redis.call('EXISTS', session_key(members[j])) == 1 then
      table.insert(listed, members[j])
      table.insert(listed, token_text(members[j + 1]))
      table.insert(listed, record)
    end
  end
  if #members == 0 then redis.call('DEL', Q.e) end
  if #listed > 0 then
    table.insert(reply, ARGV[i])
    table.insert(reply, listed)
  end
end
return reply

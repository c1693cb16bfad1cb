-- Single-row updates by primary key over the 10,000 users that scripts/bench-rest loads.
-- Each thread starts at its own offset, so two threads do not update one row at once.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local next_thread = 0
setup = function(thread)
  thread:set("offset", next_thread * 5000)
  next_thread = next_thread + 1
end
local n = 0
request = function()
  n = n + 1
  local id = (offset + n * 7919) % 10000 + 1
  local body = string.format('{"sql":"UPDATE users SET name = \'u %d\' WHERE id = %d"}', n, id)
  return wrk.format(nil, "/db/bench/execute", nil, body)
end

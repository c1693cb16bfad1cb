-- Single-row inserts, each thread with its own range of new ids (below 2^31: wrk's Lua
-- formats %d as a 32-bit integer).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local next_thread = 0
setup = function(thread)
  -- Each run of the script (RUN, set by scripts/bench-rest) and each thread gets its own ids.
  local run = tonumber(os.getenv("RUN") or "0")
  thread:set("first", 1000000 + run * 200000000 + next_thread * 20000000)
  next_thread = next_thread + 1
end
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"sql":"INSERT INTO users VALUES (%d, \'user %d\', \'u%d@example.com\')"}', first + n, n, first + n)
  return wrk.format(nil, "/db/bench/execute", nil, body)
end

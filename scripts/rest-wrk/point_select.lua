-- OLTP point select of a random row of the 10,000-row table.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local path = os.getenv("WRK_PATH") or "/db/bench/query/oltp"
local table_name = os.getenv("WRK_TABLE") or "users"
request = function()
  local id = math.random(1, 10000)
  local body = string.format('{"sql":"SELECT id, name, email FROM %s WHERE id = %d"}', table_name, id)
  return wrk.format(nil, path, nil, body)
end

-- A cross-database join through /query: one user's orders, by primary key and index.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local id = math.random(1, 10000)
  local body = string.format('{"sql":"SELECT u.name, o.total FROM bench.public.users u JOIN shop.public.orders o ON o.user_id = u.id WHERE u.id = %d"}', id)
  return wrk.format(nil, "/query", nil, body)
end

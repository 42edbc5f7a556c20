-- wrk script: POST /batch-produce with BATCH_SIZE messages per request (default 100);
-- counts status codes (summary.lua).
local n = tonumber(os.getenv("BATCH_SIZE") or "") or 100
local items = {}
for i = 1, n do
    items[i] = string.format('{"payload":{"user":"bench","n":%d,"text":"hello relayq"}}', i)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"messages":[' .. table.concat(items, ",") .. ']}'

dofile(((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or ".") .. "/summary.lua")

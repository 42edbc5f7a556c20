-- wrk script: request/reply round trips (POST /produce with "wait": true); counts status
-- codes (summary.lua).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"payload":"ping","wait":true}'

dofile(((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or ".") .. "/summary.lua")

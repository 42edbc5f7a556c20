-- wrk script: POST /produce with a small JSON body; counts status codes (summary.lua).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"payload":{"user":"bench","n":42,"text":"hello relayq"}}'

dofile(((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or ".") .. "/summary.lua")

-- wrk script: POST /produce with a small JSON body; counts status codes.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"payload":{"user":"bench","n":42,"text":"hello relayq"}}'

-- wrk script: request/reply round trips (POST /produce with "wait": true).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"payload":"ping","wait":true}'

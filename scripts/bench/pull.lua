-- wrk script: pull consumption (issue 16). Each request is either a batch ack
-- (POST /queues/$PULL_QUEUE/messages/ack {"acks": [...]}) of the messages one earlier pull of
-- the same wrk thread leased, or, when none is waiting, a pull
-- GET /queues/$PULL_QUEUE/messages?max=$PULL_MAX (default 100). PULL_ACK=single: one
-- POST .../{msgId}/ack per message instead (the old way, for comparison). done() prints one
-- JSON line: pulls, empty pulls, messages, acks (messages acked), ack requests, ack failures
-- (items in "failed", or 409/503), other statuses.
local q = os.getenv("PULL_QUEUE") or "bench"
local max = os.getenv("PULL_MAX") or "100"
local single = os.getenv("PULL_ACK") == "single"
local pull_path = "/queues/" .. q .. "/messages?max=" .. max .. "&lease_s=120"
local ack_path = "/queues/" .. q .. "/messages/ack"
local ack_hdr = {["Content-Type"] = "application/json"}
local threads = {}

pending, head, tail = {}, 1, 0
pulls, empty, messages, acks, ack_reqs, ack_fail, other = 0, 0, 0, 0, 0, 0, 0
first_other = ""

function setup(thread)
    table.insert(threads, thread)
end

function request()
    if head <= tail then
        local a = pending[head]
        pending[head] = nil
        head = head + 1
        if single then
            return wrk.format("POST", "/queues/" .. q .. "/messages/" .. a[1] .. "/ack", ack_hdr,
                              '{"lease_id":"' .. a[2] .. '"}')
        end
        return wrk.format("POST", ack_path, ack_hdr, '{"acks":[' .. a .. ']}')
    end
    return wrk.format("GET", pull_path)
end

function response(status, headers, body)
    if status == 200 then
        local n = body:match('^{"acked":(%d+)')
        if n then
            acks = acks + tonumber(n)
            ack_reqs = ack_reqs + 1
            if not body:find('"failed":[]', 1, true) then ack_fail = ack_fail + 1 end
            return
        end
        if body:find('"acked":true', 1, true) then
            acks = acks + 1
            ack_reqs = ack_reqs + 1
            return
        end
    end
    if status == 200 and body:find('"messages":', 1, true) then
        pulls = pulls + 1
        local n, items = 0, {}
        for mid, lid in body:gmatch('"message_id":"([^"]*)","attempt":%d+,"lease_id":"([^"]*)"') do
            n = n + 1
            if single then
                tail = tail + 1
                pending[tail] = {mid, lid}
            else
                items[n] = '{"message_id":"' .. mid .. '","lease_id":"' .. lid .. '"}'
            end
        end
        if n > 0 and not single then
            tail = tail + 1
            pending[tail] = table.concat(items, ",")
        end
        messages = messages + n
        if n == 0 then empty = empty + 1 end
        return
    end
    if status == 409 or status == 503 then
        ack_fail = ack_fail + 1
    else
        other = other + 1
        if first_other == "" then
            first_other = status .. " " .. body:sub(1, 120)
        end
    end
end

function done(summary, latency, requests)
    local t = {pulls = 0, empty = 0, messages = 0, acks = 0, ack_reqs = 0, ack_fail = 0, other = 0}
    local fo = ""
    for _, th in ipairs(threads) do
        for k, _ in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
        if fo == "" then fo = th:get("first_other") or "" end
    end
    if fo ~= "" then io.stderr:write("first unexpected answer: " .. fo .. "\n") end
    io.write(string.format('{"pulls": %d, "empty_pulls": %d, "messages": %d, "acks": %d, ' ..
        '"ack_requests": %d, "ack_failures": %d, "other": %d, "seconds": %.3f, "requests": %d, ' ..
        '"latency_p50_ms": %.3f, "latency_p99_ms": %.3f}\n',
        t.pulls, t.empty, t.messages, t.acks, t.ack_reqs, t.ack_fail, t.other,
        summary.duration / 1e6, summary.requests,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end

-- summary.lua - shared by the bench's wrk scripts (loaded with dofile by each of them).
-- Counts responses by HTTP status in every wrk thread and, when the run ends, prints one
-- line "WRKJSON {...}" with the counts, wrk's own summary and latency percentiles (in
-- microseconds), for scripts/bench/report.py.

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

-- Global in each thread's Lua state, so that done() can fetch it with thread:get().
statuses = {}

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local by_status = {}
    for _, t in ipairs(threads) do
        for code, n in pairs(t:get("statuses") or {}) do
            by_status[code] = (by_status[code] or 0) + n
        end
    end
    local codes = {}
    for code, n in pairs(by_status) do
        table.insert(codes, string.format('"%d":%d', code, n))
    end
    table.sort(codes)
    local e = summary.errors
    local p = {}
    for _, q in ipairs({50, 90, 99, 99.9}) do
        table.insert(p, string.format('"%s":%d', tostring(q), latency:percentile(q)))
    end
    io.write(string.format(
        'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,"status":{%s},' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,"p":{%s}}}\n',
        summary.duration, summary.requests, summary.bytes, table.concat(codes, ","),
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.min, latency.mean, latency.max, latency.stdev, table.concat(p, ",")))
end

-- wrk script: request/reply round trips through a consumer that takes PROCESSING_TIME
-- seconds per message (POST /produce with "wait": true and "processing_time"; the echo
-- handler's timer, not a sleep); counts status codes (summary.lua). Each connection is one
-- closed-loop caller: its next request leaves when its reply came back.
--
-- STAGGER=1: each connection's first request leaves after a random delay within one
-- processing time, as independent callers would, instead of all of them in the same
-- millisecond (wrk's start); after that no delay. STAGGER=0: the lockstep start, where
-- every caller's cycle stays in one burst.
local pt = os.getenv("PROCESSING_TIME") or "0.1"
local stagger = os.getenv("STAGGER") == "1"
local pt_ms = math.floor(tonumber(pt) * 1000)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"payload":"ping","wait":true,"processing_time":' .. pt .. '}'

dofile(((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or ".") .. "/summary.lua")

if stagger then
    local first = nil -- connections of this thread still to start (set by init)
    function init(args)
        first = math.ceil(tonumber(os.getenv("CONC_CONNS_PER_THREAD") or "100"))
        math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
    end
    function delay()
        if first > 0 then
            first = first - 1
            return math.random(0, pt_ms)
        end
        return 0
    end
end

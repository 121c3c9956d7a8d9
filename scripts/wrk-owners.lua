-- wrk script for the real-clients runs (scripts/real-clients.sh): each request asks for an
-- object of the next owner in turn (/obj/n1/, /obj/n2/, ... as WRK_OWNERS lists them, default
-- "1,2,3"), so with keep-alive a connection moves to another node on every request. Counts
-- responses per wall-clock second and status class, and prints them at the end, so a stall
-- shows as a second without responses.
local owners = {}
for n in string.gmatch(os.getenv("WRK_OWNERS") or "1,2,3", "%d+") do
  owners[#owners + 1] = n
end
local size = os.getenv("WRK_SIZE") or "1024"
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  i = 0
  per_second = {}
  non2xx = 0
end

function request()
  i = i + 1
  local o = owners[(i % #owners) + 1]
  return wrk.format("GET", "/obj/n" .. o .. "/wrk-" .. i .. "?size=" .. size)
end

function response(status, headers, body)
  local s = os.time()
  per_second[s] = (per_second[s] or 0) + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local total, bad, first, last = {}, 0, nil, nil
  for _, t in ipairs(threads) do
    local ps = t:get("per_second")
    bad = bad + t:get("non2xx")
    for s, n in pairs(ps) do
      total[s] = (total[s] or 0) + n
      if not first or s < first then first = s end
      if not last or s > last then last = s end
    end
  end
  local line, empty = {}, 0
  for s = first or 0, last or -1 do
    local n = total[s] or 0
    if n == 0 then empty = empty + 1 end
    line[#line + 1] = tostring(n)
  end
  io.write("per-second: " .. table.concat(line, " ") .. "\n")
  io.write(string.format("seconds without responses: %d; non-2xx: %d; p50 %.0f us, p99 %.0f us\n",
    empty, bad, latency:percentile(50), latency:percentile(99)))
end

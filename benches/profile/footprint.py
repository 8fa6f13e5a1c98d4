# For footprint.sh. `drive PORT N TRACE`: N streamed chat requests one after another on one
# connection, each window (the trace's size when the request is sent, and once its first content
# is read) written to TRACE.windows. `count TRACE BIN MAPS TOP`: the distinct 64-byte lines of
# code and of data in each window but the first, their median, and with TOP > 0 the code's
# lines by function in the median window.
import bisect, collections, http.client, json, os, subprocess, sys, time


def drive(port, n, trace):
    body = json.dumps({"model": "llama-3.1-8b-instruct", "stream": True, "max_tokens": 64,
                       "messages": [{"role": "system", "content": "You are terse."},
                                    {"role": "user", "content": "Say hello to the benchmark."}]})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    with open(trace + ".windows", "w") as out:
        for _ in range(n):
            # The trace is written as it goes: let what came before reach it.
            time.sleep(0.3)
            start = os.path.getsize(trace)
            c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                sys.exit("footprint: the proxy answered %d" % r.status)
            if b"Hello" not in r.read1(4096):
                sys.exit("footprint: the first read held no first content")
            time.sleep(0.3)
            out.write("%d %d\n" % (start, os.path.getsize(trace)))
            r.read()


def lines(trace, start, end):
    code, data = set(), set()
    with open(trace, "rb") as f:
        f.seek(start)
        chunk = f.read(end - start)
    for line in chunk.split(b"\n"):
        # lackey: "I  addr,size" for an instruction, " L addr,size" (S, M) for data.
        kind, _, rest = line.strip().partition(b" ")
        try:
            addr = int(rest.strip().split(b",")[0], 16)
        except ValueError:
            continue
        if kind == b"I":
            code.add(addr >> 6)
        elif kind in (b"L", b"S", b"M"):
            data.add(addr >> 6)
    return code, data


def functions(binary, maps):
    base = None
    for m in open(maps):
        f = m.split()
        if len(f) >= 6 and os.path.realpath(f[5]) == os.path.realpath(binary) and int(f[2], 16) == 0:
            base = int(f[0].split("-")[0], 16)
            break
    if base is None:
        return [], []
    out = subprocess.run(["nm", "-C", "--defined-only", binary], capture_output=True, text=True).stdout
    syms = sorted((int(p[0], 16) + base, p[2]) for p in (l.split(None, 2) for l in out.splitlines())
                  if len(p) == 3 and p[1] in "tTwW")
    return [s[0] for s in syms], [s[1] for s in syms]


def count(trace, binary, maps, top):
    windows = [tuple(map(int, l.split())) for l in open(trace + ".windows")][1:]
    seen = sorted((lines(trace, a, b) for a, b in windows), key=lambda cd: len(cd[0]) + len(cd[1]))
    code, data = seen[len(seen) // 2]
    print("footprint of a stream to its first token, median of %d: %d lines of code, %d of data "
          "(64 B; %.0f KiB in all)" % (len(seen), len(code), len(data), (len(code) + len(data)) / 16))
    if top <= 0:
        return
    addrs, names = functions(binary, maps)
    by = collections.Counter()
    for l in code:
        i = bisect.bisect_right(addrs, (l << 6) + 63) - 1
        # Past a megabyte from the nearest symbol is another object (libc, the vDSO).
        near = i >= 0 and (l << 6) - addrs[i] < 1 << 20
        by[names[i] if near else "(outside the binary)"] += 1
    for name, n in by.most_common(top):
        print("%5d  %s" % (n, name[:140]))


if __name__ == "__main__":
    if sys.argv[1] == "drive":
        drive(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        count(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))

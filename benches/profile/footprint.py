# For footprint.sh and legs.sh. `drive PORT N TRACE`: N streamed chat requests one after another
# on one connection, each window (the trace's size when the request is sent, and once its first
# content is read) written to TRACE.windows. `count TRACE BIN MAPS TOP`: the distinct 64-byte
# lines of code and of data in each window but the first, their median, and with TOP > 0 the
# code's lines by function in the median window. `pace PORT N RATE AT_ONCE`: N streams, RATE a
# second (see pace). `legs CALLS`: legs.sh's medians from `perf script`'s system calls.
import bisect, collections, http.client, json, os, queue, re, socket, statistics, subprocess, sys, threading, time

BODY = json.dumps({"model": "llama-3.1-8b-instruct", "stream": True, "max_tokens": 64,
                   "messages": [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "Say hello to the benchmark."}]})


def drive(port, n, trace):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    with open(trace + ".windows", "w") as out:
        for _ in range(n):
            # The trace is written as it goes: let what came before reach it.
            time.sleep(0.3)
            start = os.path.getsize(trace)
            c.request("POST", "/v1/chat/completions", BODY, {"content-type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                sys.exit("footprint: the proxy answered %d" % r.status)
            if b"Hello" not in r.read1(4096):
                sys.exit("footprint: the first read held no first content")
            time.sleep(0.3)
            out.write("%d %d\n" % (start, os.path.getsize(trace)))
            r.read()


SYSCALL = re.compile(rb"SYSCALL\[\d+,\d+\]\(\d+\) sys_(\w+) \( (\d+)")


def lines(trace, start, end, cut=False):
    """With `cut` (the trace has valgrind's system calls), only up to the first write to the
    client: the fd the request was read from."""
    code, data = set(), set()
    with open(trace, "rb") as f:
        f.seek(start)
        chunk = f.read(end - start)
    client = None
    for line in chunk.split(b"\n"):
        if cut and line.startswith(b"SYSCALL["):
            m = SYSCALL.match(line)
            if m and client is None and m.group(1) in (b"recvfrom", b"read", b"recvmsg"):
                client = m.group(2)
            elif m and m.group(2) == client and m.group(1) in (b"writev", b"write", b"sendto", b"sendmsg"):
                break
            continue
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


def count(trace, binary, maps, top, cut=False):
    windows = [tuple(map(int, l.split())) for l in open(trace + ".windows")][1:]
    seen = sorted((lines(trace, a, b, cut) for a, b in windows), key=lambda cd: len(cd[0]) + len(cd[1]))
    code, data = seen[len(seen) // 2]
    print("footprint of a stream to its first token%s, median of %d: %d lines of code, %d of data "
          "(64 B; %.0f KiB in all)" % (" (to its first write)" if cut else "", len(seen), len(code),
                                       len(data), (len(code) + len(data)) / 16))
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
    # The data by the mapping it lies in, as the process's maps read after the streams: the
    # stack, the allocator's pages, the binary's statics.
    regions = []
    for m in open(maps + ".end" if os.path.exists(maps + ".end") else maps):
        f = m.split()
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        regions.append((lo, hi, f[5] if len(f) >= 6 else "(anonymous %s)" % f[0]))
    regions.sort()
    starts = [r[0] for r in regions]
    where = collections.Counter()
    for l in data:
        i = bisect.bisect_right(starts, l << 6) - 1
        where[regions[i][2] if i >= 0 and (l << 6) < regions[i][1] else "(unmapped)"] += 1
    print("data by mapping:")
    for name, n in where.most_common(8):
        print("%5d  %s" % (n, name[:140]))


REQUEST = ("POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
           "content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
           % (len(BODY), BODY)).encode()


def pace(port, n, rate, at_once):
    """n streams started `rate` a second; with `at_once`, each on a connection of its own from a
    pool, without waiting for the ones before to end (as benches/load's P2), else one after
    another on one connection. Each request goes in one write, so that the proxy reads it in
    one (`legs` finds requests so): http.client writes the body apart from the head."""
    idle = queue.Queue()
    for _ in range(at_once or 1):
        idle.put(socket.create_connection(("127.0.0.1", port), timeout=20))
    failed = []

    def one():
        c = idle.get()
        c.sendall(REQUEST)
        r = http.client.HTTPResponse(c)
        r.begin()
        if r.status != 200:
            failed.append(r.status)
        r.read()
        idle.put(c)

    start, threads = time.monotonic(), []
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        if at_once:
            threads.append(threading.Thread(target=one))
            threads[-1].start()
        else:
            one()
    for t in threads:
        t.join()
    if failed:
        sys.exit("legs: the proxy answered %s" % sorted(set(failed)))


READ, WRITEV = 45, 20  # recvfrom and writev on x86-64


def legs(calls):
    """Each stream followed by its sockets through the serving thread's system calls: the
    client's request read (one read of pace's REQUEST, whole), the upstream's request written
    (the next write to another socket), the upstream's answer read, the client's first bytes
    written."""
    events = []
    for line in open(calls):
        m = re.match(r"\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit): NR (\d+)\s*(.*)", line)
        if m:
            events.append((int(m[1]), float(m[2]) * 1e6, m[3], int(m[4]), m[5]))
    # The thread that serves: the one with the most calls. Its calls, as (entered, returned,
    # number, socket, result).
    main = collections.Counter(e[0] for e in events).most_common(1)[0][0]
    done, entered = [], None
    for _, t, kind, nr, rest in (e for e in events if e[0] == main):
        if kind == "enter":
            fd = re.match(r"\(([0-9a-f]+)", rest)
            entered = (t, nr, int(fd[1], 16) if fd else None)
        elif entered and entered[1] == nr:
            done.append((entered[0], t, nr, entered[2], int(re.search(r"= (-?\d+)", rest)[1])))
            entered = None
    got = {k: [] for k in ("leg 1", "wait", "leg 2", "in all")}
    streams, client_of, upstream, asking = {}, {}, set(), None
    for began, ended, nr, fd, result in done:
        if nr == READ and result == len(REQUEST) and fd not in upstream:
            streams[fd], asking = {"req": ended}, fd
        elif nr == WRITEV and asking is not None and fd != asking:
            streams[asking].update(up=began, sent=ended)
            client_of[fd], asking = asking, None
            upstream.add(fd)
        elif nr == READ and result > 0 and fd in client_of:
            streams[client_of.pop(fd)].setdefault("answer", ended)
        elif nr == WRITEV and "answer" in streams.get(fd, {}):
            s = streams.pop(fd)
            got["leg 1"].append(s["up"] - s["req"])
            got["wait"].append(s["answer"] - s["sent"])
            got["leg 2"].append(began - s["answer"])
            got["in all"].append(began - s["req"])
    print("%d streams, medians in µs: " % len(got["leg 1"])
          + ", ".join("%s %.0f" % (k, statistics.median(v)) for k, v in got.items() if v))


if __name__ == "__main__":
    if sys.argv[1] == "drive":
        drive(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "pace":
        pace(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "legs":
        legs(sys.argv[2])
    else:
        count(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6:7] == ["1"])

# The functions a request runs, for deploy/link-order.txt (see link-order.sh): from callgrind
# profiles made with --dump-instr=yes of FEW and then MANY requests, every instruction that ran
# in at least a tenth of the requests in between, attributed to its function by the binary's
# symbol table. Prints the functions in the order the compiler had laid them out (neighbours
# tend to call each other), for each build in turn, and their footprint on stderr.
import bisect, collections, os, re, subprocess, sys

def costs(path):
    """Instructions run per (object, address) in one callgrind profile."""
    cost = collections.Counter()
    objects, ob, last, call = {}, None, 0, False
    for line in open(path, errors="replace"):
        c = line[:1]
        if c in "0123456789+-*":
            parts = line.split()
            a = parts[0]
            if a == "*":
                addr = last
            elif a[0] in "+-":
                addr = last + int(a, 0)
            else:
                addr = int(a, 0)
            last = addr
            if call:  # the inclusive cost of a call, not this instruction's own
                call = False
            elif len(parts) >= 3:
                cost[(ob, addr)] += int(parts[2])
        elif line.startswith("calls="):
            call = True
        elif line.startswith("ob="):
            m = re.match(r"ob=\((\d+)\)(?: (.*))?", line.strip())
            if m.group(2):
                objects[m.group(1)] = m.group(2)
            ob = objects.get(m.group(1), m.group(1))
    return cost

def hot_functions(profiles, binary, few, many):
    a, b = costs(f"{profiles}/callgrind.{few}.x"), costs(f"{profiles}/callgrind.{many}.x")
    symbols = []
    nm = subprocess.run(["nm", "-n", "-S", binary], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwW":
            symbols.append((int(p[0], 16), int(p[1], 16), p[3]))
    symbols.sort()
    starts = [s[0] for s in symbols]
    hot, lines, pages = set(), set(), set()
    for (ob, addr), n in b.items():
        if n - a.get((ob, addr), 0) < (many - few) / 10:
            continue
        lines.add((ob, addr >> 6))
        pages.add((ob, addr >> 12))
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < symbols[i][0] + max(symbols[i][1], 1):
            hot.add(symbols[i][:1] + symbols[i][2:])
    print(f"{binary}: {len(hot)} functions; {len(lines)} lines of 64 B and {len(pages)} pages"
          " of 4 KiB run a request", file=sys.stderr)
    return [name for _, name in sorted(hot)]

work = sys.argv[1]
few, many = int(os.environ.get("FEW", 200)), int(os.environ.get("MANY", 1200))
seen = set()
for build in sys.argv[2:]:
    for name in hot_functions(f"{work}/{build}.cg", f"{work}/{build}", few, many):
        if name not in seen:
            seen.add(name)
            print(name)

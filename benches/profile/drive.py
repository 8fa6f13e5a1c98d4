# N sequential chat requests over one keep-alive connection, for benches/profile/run.sh.
import http.client, json, sys, time
port, n, model = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = json.dumps({"model": model, "stream": False, "messages": [{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}], "max_tokens": 64})
c = http.client.HTTPConnection("127.0.0.1", port)
bad = 0
for i in range(n):
    c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    r = c.getresponse(); d = r.read()
    if r.status != 200: bad += 1; print(r.status, d[:200], file=sys.stderr)
print("done", n, "bad", bad)

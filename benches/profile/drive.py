# N sequential requests over one keep-alive connection, for benches/profile/run.sh: whole chat
# requests, or with MIX=1 every front end in turn (Chat Completions, Anthropic's Messages,
# Responses), whole and streamed, or with STREAM=1 streamed chat requests only.
import http.client, json, os, sys
port, n, model = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
system, user = "You are terse.", "Say hello to the benchmark."
def chat(stream): return json.dumps({"model": model, "stream": stream, "messages": [{"role":"system","content":system},{"role":"user","content":user}], "max_tokens": 64})
def messages(stream): return json.dumps({"model": model, "stream": stream, "max_tokens": 64, "system": system, "messages": [{"role":"user","content":user}]})
def responses(stream): return json.dumps({"model": model, "stream": stream, "instructions": system, "input": [{"role":"user","content":user}]})
kinds = [("/v1/chat/completions", chat(os.environ.get("STREAM") == "1"))]
if os.environ.get("MIX") == "1":
    kinds += [("/v1/chat/completions", chat(True)), ("/v1/messages", messages(False)), ("/v1/messages", messages(True)),
              ("/v1/responses", responses(False)), ("/v1/responses", responses(True))]
headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
c = http.client.HTTPConnection("127.0.0.1", port)
bad = 0
for i in range(n):
    path, body = kinds[i % len(kinds)]
    c.request("POST", path, body, headers)
    r = c.getresponse(); d = r.read()
    if r.status != 200: bad += 1; print(r.status, d[:200], file=sys.stderr)
print("done", n, "bad", bad)

# The upstream of benches/profile/run.sh: one OpenAI chat completion for every POST, whole or
# (when the request asks to stream) as server-sent events. `mock.py PORT PAUSE` streams the first
# two events (the first content) at once and the rest PAUSE seconds later, in chunks: what
# footprint.sh measures ends at the first. `mock.py PORT PAUSE N` sends N more content events
# first, PAUSE seconds apart (benches/load's P2 sends 20, 10 ms apart).
import http.server, json, sys, socketserver, time
PAUSE = float(sys.argv[2]) if len(sys.argv) > 2 else None
MORE = int(sys.argv[3]) if len(sys.argv) > 3 else 0
BODY = json.dumps({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"llama-3.1-8b-instruct","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark."},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}}).encode()
def chunk(delta, finish=None, usage=None):
    c = {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama-3.1-8b-instruct","choices":[{"index":0,"delta":delta,"finish_reason":finish}]}
    if usage: c["choices"] = []; c["usage"] = usage
    return b"data: " + json.dumps(c).encode() + b"\n\n"
STREAM = (chunk({"role":"assistant","content":""}) + b"".join(chunk({"content": w}) for w in ["Hello", ",", " bench", "mark", "."])
          + chunk({}, "stop") + chunk(None, usage={"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}) + b"data: [DONE]\n\n")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go in two writes: without this, Nagle holds the second until the
    # gateway acknowledges the first (40 ms of delayed ACK per request).
    disable_nagle_algorithm = True
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); req = self.rfile.read(n)
        stream = b'"stream":true' in req.replace(b" ", b"")
        body, kind = (STREAM, "text/event-stream") if stream else (BODY, "application/json")
        if stream and PAUSE is not None:
            # The role's empty delta and the first word: the first content, the commit point.
            first = STREAM.index(b"\n\n", STREAM.index(b"\n\n") + 2) + 2
            chunk_of = lambda b: b"%x\r\n" % len(b) + b + b"\r\n"
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n" + chunk_of(STREAM[:first]))
            self.wfile.flush()
            word = STREAM[first:STREAM.index(b"\n\n", first) + 2]
            for _ in range(MORE):
                time.sleep(PAUSE)
                self.wfile.write(chunk_of(word))
                self.wfile.flush()
            time.sleep(PAUSE)
            self.wfile.write(chunk_of(STREAM[first:]) + b"0\r\n\r\n")
            return
        self.send_response(200); self.send_header("content-type", kind); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()

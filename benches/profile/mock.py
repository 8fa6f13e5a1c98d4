# The upstream of benches/profile/run.sh: one OpenAI chat completion for every POST.
import http.server, json, sys, socketserver
BODY = json.dumps({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"llama-3.1-8b-instruct","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark."},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go in two writes: without this, Nagle holds the second until the
    # gateway acknowledges the first (40 ms of delayed ACK per request).
    disable_nagle_algorithm = True
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); self.rfile.read(n)
        self.send_response(200); self.send_header("content-type","application/json"); self.send_header("content-length", str(len(BODY))); self.end_headers(); self.wfile.write(BODY)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()

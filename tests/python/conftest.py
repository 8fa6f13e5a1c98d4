"""Fixtures: the gateway binary started on free loopback ports with a test configuration."""

import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("MODELGATE_BIN", ROOT / "target" / "debug" / "modelgate"))
KEY = "mg-python-sdk-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, config: str):
        self.dir = tempfile.mkdtemp(prefix="modelgate-py-")
        self.config = Path(self.dir) / "modelgate.yaml"
        self.config.write_text(config)
        self.log = Path(self.dir) / "gateway.log"
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(self.config),
             "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"),
        )
        deadline = time.time() + 20
        while True:
            text = self.log.read_text()
            m = re.search(r"modelgate is serving api=(\S+) admin=(\S+)", text)
            if m:
                self.base = f"http://{m.group(1)}"
                self.admin = f"http://{m.group(2)}"
                return
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"gateway did not start:\n{text}")
            time.sleep(0.02)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_gateway(deployments: str, keys: bool = True) -> Gateway:
    key_block = ""
    if keys:
        digest = hashlib.sha256(KEY.encode()).hexdigest()
        key_block = f"keys:\n  - {{id: sdk, tenant: python, sha256: {digest}}}\n"
    return Gateway(f"reload: {{poll_interval: 0}}\n{key_block}deployments:\n{deployments}")


@pytest.fixture(scope="session")
def gateway():
    gw = start_gateway("  - {name: echo, kind: echo, model: echo}\n")
    yield gw
    gw.stop()

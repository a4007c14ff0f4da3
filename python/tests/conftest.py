"""A real SplitUp network for the client's tests: processes, not mocks.

One ledger (``splitup ledger start --dev`` on 127.0.0.1, a free port, a
temporary data directory) and two nodes (``splitup node start``) are
started once for the session and stopped at its end, whatever happened:
each runs in its own process group, which is sent SIGTERM, then SIGKILL.
This follows the Rust process tests (``crates/cli/tests/common/mod.rs``).

The binary is ``$SPLITUP_BIN``, else ``splitup`` on PATH
(``crates/cli/tests/python_client.rs`` sets ``SPLITUP_BIN`` to the binary
cargo just built). The processes' logs are attached to a failing test's
report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import pytest

from splitup import BinaryNotFoundError, Client, find_binary

# How long a process may take to come up (a debug build on a loaded 2-core
# CI machine is slow to load ONNX Runtime and pre-load tasks).
START_SECS = 120


class Proc:
    """A long-running ``splitup`` process in its own process group, its output in files."""

    def __init__(self, name: str, argv: List[str], directory: Path) -> None:
        self.name = name
        self.stdout_path = directory / f"{name}.stdout"
        self.stderr_path = directory / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                argv,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def lines(self) -> List[str]:
        """Its JSON Lines output so far (complete lines only)."""
        text = self.stdout_path.read_text(errors="replace")
        return [line for line in text.split("\n")[:-1] if line.strip()]

    def log(self) -> str:
        out = self.stdout_path.read_text(errors="replace")
        err = self.stderr_path.read_text(errors="replace")
        return f"--- {self.name} stdout\n{out[-6000:]}\n--- {self.name} stderr\n{err[-6000:]}"

    def wait_for_line(self, what: str, pred) -> dict:
        """The first JSON line for which ``pred`` holds; fails if the process exits first or is too slow."""
        deadline = time.monotonic() + START_SECS
        while True:
            for line in self.lines():
                doc = json.loads(line)
                if pred(doc):
                    return doc
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.popen.returncode}) before {what}\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no {what} within {START_SECS} s\n{self.log()}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        """Sends ``sig`` to its whole process group (the node's task workers too)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL to what is left after 10 s, then reaped.

        The leader is not reaped before the SIGKILL (``WNOWAIT``), so its
        process group id cannot have been reused by then.
        """
        pid = self.popen.pid
        if self.popen.returncode is None:
            try:
                os.killpg(pid, signal.SIGCONT)  # a test may have stopped it
                os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                        break
                    time.sleep(0.05)
                # The leader, or workers it left behind.
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait()


class Network:
    """A ledger and nodes on 127.0.0.1, and helpers to make funded keys."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.dir = directory
        self.procs: List[Proc] = []
        self.url: Optional[str] = None
        self.node_keys: Dict[str, str] = {}

    def cli(self, *args: str) -> str:
        """Runs ``splitup ARGS`` here; its standard output (fails the test with both streams on error)."""
        done = subprocess.run(
            [self.binary, *args], cwd=self.dir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            pytest.fail(f"splitup {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start_ledger(self) -> None:
        # --p 0: challenge nothing. A challenged result needs a validator and
        # two judges besides its asserter, which two nodes cannot provide
        # (the execution would fail with a refund); the Rust tests do the same.
        ledger = Proc(
            "ledger",
            [
                self.binary, "ledger", "start", "--dev", "--listen", "127.0.0.1:0",
                "--data", str(self.dir / "ledger"), "--p", "0", "--json",
            ],
            self.dir,
        )
        self.procs.append(ledger)
        self.url = ledger.wait_for_line("listening", lambda d: d.get("event") == "listening")["url"]

    def funded_key(self, name: str, usdc: int) -> Path:
        """A new key file ``NAME.json`` holding ``usdc`` USDC from the faucet."""
        path = self.dir / f"{name}.json"
        self.cli("keys", "new", "-o", str(path))
        self.cli("faucet", "--ledger", self.url, "--key", str(path), "--amount", str(usdc))
        return path

    def start_node(self, name: str) -> None:
        """Funds a key with 5000 USDC, starts a node on it (8 GiB) and waits until it is registered."""
        key = self.funded_key(name, 5000)
        self.node_keys[name] = json.loads(self.cli("keys", "show", "--key", str(key), "--json"))["public_key"]
        node = Proc(
            name,
            [self.binary, "node", "start", "--ledger", self.url, "--key", str(key), "--vram", "8GiB", "--json"],
            self.dir,
        )
        self.procs.append(node)
        node.wait_for_line("registration", lambda d: "registered with" in d.get("message", ""))

    @property
    def nodes(self) -> List[Proc]:
        return [p for p in self.procs if p.name != "ledger"]

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.procs)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()


_network: Optional[Network] = None


@pytest.fixture(scope="session")
def binary() -> str:
    """The ``splitup`` binary under test."""
    try:
        return find_binary()
    except BinaryNotFoundError as e:
        pytest.fail(f"the tests run the real binary: {e}")


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No developer's SPLITUP_* settings or config file leak into the tests; SPLITUP_BIN stays."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPLITUP_HOME", str(tmp_path_factory.mktemp("splitup-home")))
        for var in ("SPLITUP_LEDGER", "SPLITUP_KEY", "SPLITUP_STORE"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(scope="session")
def network(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """A ledger and two registered nodes, stopped at the end of the session even on failure."""
    global _network
    net = Network(binary, tmp_path_factory.mktemp("network"))
    _network = net
    try:
        net.start_ledger()
        for i in range(2):
            net.start_node(f"node{i}")
        yield net
    finally:
        net.close()
        _network = None


@pytest.fixture(scope="session")
def user(network: Network) -> Client:
    """A client of the network as a user holding 100 USDC."""
    return Client(network.url, key=network.funded_key("user", 100))


class TinyModel:
    """The generated 8-layer transformer, one input and its unsplit output."""

    def __init__(self, path: Path, ids: np.ndarray, reference: np.ndarray) -> None:
        self.path = path
        self.inputs = {"input_ids": ids}
        self.reference = reference


@pytest.fixture(scope="session")
def tiny(network: Network) -> TinyModel:
    """``splitup generate --layers 8`` and its whole-model output from the ``onnxruntime`` package.

    The reference is computed independently of SplitUp: ONNX Runtime's
    Python package runs the unsplit model.onnx in this process.
    """
    import onnxruntime

    path = network.dir / "model.onnx"
    network.cli("generate", "--layers", "8", "-o", str(path))
    ids = np.array([[2, 7, 1, 8, 2, 8, 1, 8]], dtype=np.int64)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input_ids": ids})
    return TinyModel(path, ids, logits)


@pytest.fixture(scope="session")
def deployed(user: Client, tiny: TinyModel) -> int:
    """The tiny model deployed with the client, split into several tasks; its model id.

    700 KiB per node splits the 2.4 MiB model into ≥ 4 tasks (as in the
    Rust network tests); batch=1, seq=8 fix its symbolic dimensions.
    """
    return user.deploy(tiny.path, vram="700KiB", dims={"batch": 1, "seq": 8})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failing test's report carries the ledger's and the nodes' logs."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _network is not None:
        report.sections.append(("splitup network logs", _network.logs()))

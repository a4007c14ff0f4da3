"""The client against a real network (conftest.py): deploy, run, compare with the unsplit run; errors."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import splitup
from splitup import BinaryNotFoundError, Client, SplitUpError, SplitUpTimeout

# The tolerance the partitioner promises between a split and an unsplit run
# (`Tolerance::PARTITION` in crates/tensor/src/compare.rs, the one the Rust
# network tests use): |split - whole| <= 1e-5 + 1e-4 * |whole|, which is
# numpy's allclose rule. Cutting a graph into tasks changes which kernels
# ONNX Runtime fuses across a cut, so float results may differ in the last
# bits; they may not differ by more.
PARTITION_RTOL = 1e-4
PARTITION_ATOL = 1e-5


def assert_equals_unsplit(outputs: dict, tiny) -> None:
    assert list(outputs) == ["logits"]
    logits = outputs["logits"]
    assert logits.dtype == np.float32 and logits.shape == (1, 8, 2048)
    np.testing.assert_allclose(logits, tiny.reference, rtol=PARTITION_RTOL, atol=PARTITION_ATOL)


def test_a_deployed_model_runs_split_and_equals_the_unsplit_onnxruntime_run(network, user, tiny, deployed):
    me = user.balance()["public_key"]
    (listed,) = [m for m in user.models() if m["id"] == deployed]
    assert listed["name"] == "model" and listed["active"] and listed["owner"] == me
    assert listed["tasks"] >= 4, f"700 KiB should split the model into several tasks: {listed}"

    outputs = user.run(deployed, tiny.inputs, timeout=120)
    assert_equals_unsplit(outputs, tiny)

    # The execution, from the ledger: the newest of this user's, completed,
    # every task completed by one of the network's nodes, outputs acknowledged.
    overview = user.status()
    (run,) = [e for e in overview["recent"] if e["user"] == me and e["model"] == deployed][:1]
    assert run["status"] == "Completed" and run["completed"] == run["tasks"] == listed["tasks"]
    s = user.status(run["execution"])
    assert s["status"] == "Completed" and s["failure"] is None and s["fetched"]
    assert [t["task"] for t in s["tasks"]] == list(range(1, listed["tasks"] + 1))
    assert all(t["state"] == "Completed" for t in s["tasks"]), s["tasks"]
    assert {t["node"] for t in s["tasks"]} <= set(network.node_keys.values())


def test_submit_wait_and_fetch(network, user, tiny, deployed):
    execution = user.submit(deployed, tiny.inputs)
    assert isinstance(execution, int)
    done = user.wait(execution, timeout=120)
    assert done["execution"] == execution and done["status"] == "Completed"
    assert all(t["state"] == "Completed" for t in done["tasks"])
    assert not done["fetched"]
    assert_equals_unsplit(user.fetch(execution), tiny)
    assert user.status(execution)["fetched"], "fetch acknowledges the outputs"


def test_inputs_in_any_numpy_layout_are_sent_as_the_binary_reads_them(user, tiny, deployed):
    ids = tiny.inputs["input_ids"]
    big_endian = ids.astype(">i8")
    strided = np.repeat(ids, 2, axis=1)[:, ::2]  # a non-contiguous view
    assert not strided.flags.c_contiguous and np.array_equal(strided, ids)
    for layout in (big_endian, strided, ids.T.copy().T):
        assert_equals_unsplit(user.run(deployed, {"input_ids": layout}, timeout=120), tiny)


def test_concurrent_runs_with_one_key_all_succeed(network, user, tiny, deployed, binary):
    """Each signing command reads the key's nonce, then sends: the client serialises them per key
    file (threads, a second Client, another process), so no run is refused for a stale nonce."""
    from concurrent.futures import ThreadPoolExecutor

    other_process = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, numpy as np; from splitup import Client\n"
            "c = Client(sys.argv[1], key=sys.argv[2])\n"
            "for _ in range(4): c.run(int(sys.argv[3]), {'input_ids': np.array([[2, 7, 1, 8, 2, 8, 1, 8]])})",
            network.url, user.key, str(deployed),
        ],
        env={**os.environ, "PYTHONPATH": str(Path(splitup.__file__).parents[1]), "SPLITUP_BIN": binary},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        same_key = Client(network.url, key=user.key)
        with ThreadPoolExecutor(6) as pool:
            runs = [pool.submit(c.run, deployed, tiny.inputs, timeout=120) for c in [user, same_key] * 4]
            for r in runs:
                assert_equals_unsplit(r.result(), tiny)
    finally:
        out, _ = other_process.communicate(timeout=300)
    assert other_process.returncode == 0, out.decode()


def test_models_nodes_and_balance(network, user, deployed):
    assert deployed in [m["id"] for m in user.models()]
    nodes = user.nodes()
    assert {n["public_key"] for n in nodes} == set(network.node_keys.values())
    assert all(n["status"] == "Active" for n in nodes)
    b = user.balance()
    assert b["node"] is None and 0 < b["balance_micro_usdc"] < 100_000_000, "runs cost fees"
    before = b["balance_micro_usdc"]
    assert user.faucet(5)["balance_micro_usdc"] == before + 5_000_000


# -- errors a user will hit --------------------------------------------------------


def test_an_unknown_model_is_a_clear_error(user, tiny):
    with pytest.raises(SplitUpError) as e:
        user.run(999, tiny.inputs, timeout=30)
    assert "unknown model 999" in str(e.value)
    assert e.value.returncode == 1 and "unknown model 999" in e.value.stderr


def test_a_wrong_input_name_dtype_or_shape_is_a_clear_error(user, tiny, deployed):
    ids = tiny.inputs["input_ids"]
    with pytest.raises(SplitUpError, match='missing input "input_ids"'):
        user.run(deployed, {"ids": ids}, timeout=30)
    with pytest.raises(SplitUpError, match='the model has no input "extra"'):
        user.run(deployed, {"input_ids": ids, "extra": ids}, timeout=30)
    with pytest.raises(SplitUpError, match=r'input "input_ids" is int32 \[1, 8\], the model takes int64 \[1, 8\]'):
        user.run(deployed, {"input_ids": ids.astype(np.int32)}, timeout=30)
    with pytest.raises(SplitUpError, match=r"is int64 \[1, 4\], the model takes int64 \[1, 8\]"):
        user.submit(deployed, {"input_ids": ids[:, :4]})
    # What the command line cannot carry is refused before anything runs.
    with pytest.raises(ValueError, match="contains '='"):
        user.run(deployed, {"input=ids": ids})
    with pytest.raises(TypeError, match="bool, integer and float tensors only"):
        user.run(deployed, {"input_ids": np.array(["a", "b"])})


def test_an_unknown_execution_and_an_unreachable_ledger_are_clear_errors(user, binary):
    with pytest.raises(SplitUpError, match="unknown execution 4242"):
        user.status(4242)
    with pytest.raises(SplitUpError, match=r"cannot reach the ledger at http://127.0.0.1:1 \(is `splitup ledger start` running\?\)"):
        Client("http://127.0.0.1:1", binary=binary).models()


def test_an_unfunded_key_cannot_run(network, tiny, deployed, tmp_path):
    key = tmp_path / "poor.json"
    network.cli("keys", "new", "-o", str(key))
    poor = Client(network.url, key=key)
    # Its input upload is refused before any execution is created.
    with pytest.raises(SplitUpError, match="accounts holding at least 100000 micro-USDC may upload"):
        poor.run(deployed, tiny.inputs, timeout=30)


def test_a_bad_vram_is_the_binarys_usage_error(user, tiny):
    with pytest.raises(SplitUpError) as e:
        user.deploy(tiny.path, vram="lots")
    assert e.value.returncode == 2 and "lots" in str(e.value)
    with pytest.raises(ValueError):
        user.deploy(tiny.path, vram=0)


def test_a_missing_binary_says_how_to_build_one(tmp_path, monkeypatch):
    with pytest.raises(BinaryNotFoundError, match="does not exist.*cargo build --release -p splitup-cli"):
        Client(binary=tmp_path / "splitup")
    not_executable = tmp_path / "splitup"
    not_executable.write_text("")
    not_executable.chmod(stat.S_IRUSR | stat.S_IWUSR)
    monkeypatch.setenv("SPLITUP_BIN", str(not_executable))
    with pytest.raises(BinaryNotFoundError, match=r"\(SPLITUP_BIN\) is not executable.*cargo build"):
        Client()
    monkeypatch.delenv("SPLITUP_BIN")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BinaryNotFoundError, match="none is on PATH.*cargo build --release -p splitup-cli"):
        Client()
    assert issubclass(BinaryNotFoundError, SplitUpError)


# Last: it pauses the nodes.
def test_a_run_that_outlasts_its_timeout_says_which_execution_to_wait_for(network, user, tiny, deployed):
    for node in network.nodes:
        node.signal(signal.SIGSTOP)
    try:
        with pytest.raises(SplitUpTimeout) as e:
            user.run(deployed, tiny.inputs, timeout=1)
        assert isinstance(e.value, TimeoutError)
        execution = e.value.execution
        assert isinstance(execution, int) and f"execution {execution} did not finish within 1 s" in str(e.value)
        with pytest.raises(SplitUpTimeout) as w:
            user.wait(execution, timeout=0.5)
        assert w.value.execution == execution
        with pytest.raises(SplitUpError, match=f"execution {execution} is still in progress"):
            user.fetch(execution)
    finally:
        for node in network.nodes:
            node.signal(signal.SIGCONT)
    assert user.wait(execution, timeout=120)["status"] == "Completed"
    assert_equals_unsplit(user.fetch(execution), tiny)

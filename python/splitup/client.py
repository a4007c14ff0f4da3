"""A Python client for a SplitUp network, over the ``splitup`` binary.

Deploying a model means partitioning it and calibrating every task, which
the Rust code does; the client therefore runs the ``splitup`` command-line
binary for every operation and reads its ``--json`` answer: one JSON
document on standard output whose fields are a documented contract
(``docs/cli-json.md``: fields may be added, never renamed or retyped).

Reads (``status``, ``models``, ``nodes``, ``balance``) go through the
binary too, not through the ledger's HTTP API with ``urllib``, because:

- the ``--json`` documents are the contract the project documents and tests
  (``crates/cli/tests/operate.rs`` checks every field); the ledger's HTTP
  views are what the binary itself reads and shapes (``status EXECUTION``
  derives each task's verdict from them, for instance);
- the binary resolves the ledger and the key exactly as the command line
  does (flag, then ``SPLITUP_LEDGER``/``SPLITUP_KEY``, then the config file,
  then the defaults), completes ``HOST:PORT`` to a URL, and signs the reads
  that need a signature (``fetch``), so a ``Client`` and a shell in the same
  environment always talk to the same ledger as the same key;
- its error messages (``unknown model 99``, ``cannot reach the ledger at …
  (is `splitup ledger start` running?)``) are the ones users are told about.

The cost is one short process per call (milliseconds), which is small next
to a network execution.

Commands that sign an instruction (``deploy``, ``submit``, ``fetch``, which
acknowledges, ``undeploy``) are serialised per key file: the binary reads
the key's nonce from the ledger and then sends the instruction, so two at
once with one key would sign the same nonce and one would be refused
(``409 Conflict: nonce … is not the signer's next nonce``). Threads of one
process share a lock per key file, and processes share an advisory lock
on a file beside the key (``.KEYFILE.lock``, ``fcntl.flock``); waiting for
an execution holds neither, so concurrent :meth:`Client.run` calls overlap.

Tensors cross as ``.npy`` files in a private temporary directory that is
removed when the call returns, whether it succeeded or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

try:
    import fcntl
except ImportError:  # not POSIX: threads are still serialised, processes are not
    fcntl = None  # type: ignore[assignment]

import numpy as np

from .errors import BinaryNotFoundError, ExecutionFailed, SplitUpError, SplitUpTimeout

PathLike = Union[str, "os.PathLike[str]"]
"""A file path: a ``str`` or a ``pathlib.Path``."""

ArrayLike = Union[np.ndarray, Sequence[Any], int, float, bool]
"""What an input tensor may be given as: anything ``numpy.asarray`` takes."""

BUILD_HINT = (
    "build it from the SplitUp repository with `cargo build --release -p splitup-cli` "
    "(the binary is then target/release/splitup), then pass Client(binary=PATH), "
    "set SPLITUP_BIN=PATH, or put it on PATH"
)

QUICK_TIMEOUT = 60.0
"""Seconds a quick command (status, models, balance, submit, fetch …) may take."""

DEPLOY_TIMEOUT = 3600.0
"""Seconds ``deploy`` may take: partitioning, calibration and upload of a large model."""

RUN_TIMEOUT = 600.0
"""Seconds ``run`` and ``wait`` wait for an execution by default (as ``splitup submit --wait``)."""

POLL_FIRST = 0.05
"""Seconds before ``wait``'s second look at an execution; each next wait is 1.5 times longer, up to ``poll_interval``."""

# One lock per key file (its real path), shared by every Client in this process.
_key_locks: Dict[str, threading.Lock] = {}
_key_locks_guard = threading.Lock()


def find_binary(binary: Optional[PathLike] = None) -> str:
    """The ``splitup`` binary to run: ``binary``, else ``$SPLITUP_BIN``, else ``splitup`` on ``PATH``.

    A bare name (no ``/``) is looked up on ``PATH``; a path must be an
    executable file. Raises :class:`BinaryNotFoundError`, saying where it
    looked and how to build one, when there is none.
    """
    if binary is not None:
        candidate, source = os.fspath(binary), "binary="
    elif os.environ.get("SPLITUP_BIN"):
        candidate, source = os.environ["SPLITUP_BIN"], "SPLITUP_BIN"
    else:
        found = shutil.which("splitup")
        if found is None:
            raise BinaryNotFoundError(
                f"no `splitup` binary: none given (binary=), SPLITUP_BIN is not set, and none is on PATH; {BUILD_HINT}"
            )
        return found
    if os.sep not in candidate and (os.altsep is None or os.altsep not in candidate):
        found = shutil.which(candidate)
        if found is None:
            raise BinaryNotFoundError(f"the splitup binary {candidate!r} ({source}) is not on PATH; {BUILD_HINT}")
        return found
    if not os.path.isfile(candidate):
        raise BinaryNotFoundError(f"the splitup binary {candidate!r} ({source}) does not exist; {BUILD_HINT}")
    if not os.access(candidate, os.X_OK):
        raise BinaryNotFoundError(f"the splitup binary {candidate!r} ({source}) is not executable; {BUILD_HINT}")
    return os.path.abspath(candidate)


def _error_message(stderr: str, returncode: int) -> str:
    """The binary's error: from its last ``error:`` line to the end (with every ``caused by:``)."""
    lines = stderr.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("error:"):
            text = "\n".join(lines[i:]).strip()
            return text[len("error:") :].strip()
    if lines:
        return "\n".join(lines[-20:]).strip()
    return f"splitup exited with code {returncode} and said nothing"


def _positive(timeout: float, what: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"{what} must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


class Client:
    """A client of one SplitUp ledger, acting as one key.

    Example::

        import numpy as np
        from splitup import Client

        c = Client("http://127.0.0.1:7878", key="user.json")
        model = c.deploy("model.onnx", vram="700KiB", dims={"batch": 1, "seq": 8})
        out = c.run(model, {"input_ids": np.array([[2, 7, 1, 8, 2, 8, 1, 8]], dtype=np.int64)})
        out["logits"].shape   # (1, 8, 2048)

    Args:
        ledger: the ledger's URL (``http(s)://HOST[:PORT]``, or ``HOST:PORT``).
            ``None`` (the default) lets the binary decide as the command line
            does: ``$SPLITUP_LEDGER``, else the config file's ``ledger``, else
            ``http://127.0.0.1:7878``.
        key: the key file (from ``splitup keys new`` or :meth:`new_key`) that
            signs deployments, submissions and payments. ``None`` lets the
            binary decide: ``$SPLITUP_KEY``, else the config file's ``key``,
            else ``SPLITUP_HOME/key.json`` (``~/.config/splitup/key.json``).
        binary: the ``splitup`` binary; ``None``: ``$SPLITUP_BIN``, else
            ``splitup`` on ``PATH``. Checked now: a missing one raises
            :class:`BinaryNotFoundError` here, not at the first call.
        store: read and write blobs directly in this store (``s3://…``,
            ``file:///…``; the binary's ``--store``) instead of through the
            ledger. ``None``: through the ledger (or ``$SPLITUP_STORE``).
        env: extra environment variables for the binary (credentials for
            ``store``, ``SPLITUP_HOME`` …), over the current environment.
        timeout: seconds a quick command may take before it is stopped and
            :class:`SplitUpTimeout` is raised.

    Every method raises :class:`SplitUpError` (with the binary's message,
    exit code and standard error) when the binary fails; none returns a
    partial result.
    """

    def __init__(
        self,
        ledger: Optional[str] = None,
        key: Optional[PathLike] = None,
        binary: Optional[PathLike] = None,
        *,
        store: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: float = QUICK_TIMEOUT,
    ) -> None:
        self.binary = find_binary(binary)
        self.ledger = ledger
        self.key = os.fspath(key) if key is not None else None
        self.store = store
        self.env = dict(env) if env is not None else {}
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client(ledger={self.ledger!r}, key={self.key!r}, binary={self.binary!r})"

    # -- running the binary -------------------------------------------------

    def _flags(self, keyed: bool, ledger: bool = True) -> List[str]:
        """The flags every network command shares; omitted ones are the binary's to resolve."""
        flags: List[str] = []
        if ledger and self.ledger is not None:
            flags.append(f"--ledger={self.ledger}")
        if ledger and self.store is not None:
            flags.append(f"--store={self.store}")
        if keyed and self.key is not None:
            flags.append(f"--key={self.key}")
        return flags

    def _call(
        self,
        command: Sequence[str],
        options: Sequence[str] = (),
        positionals: Sequence[str] = (),
        *,
        keyed: bool = False,
        signs: bool = False,
        ledger: bool = True,
        timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """Runs ``splitup COMMAND OPTIONS --json -- POSITIONALS``; returns its JSON document.

        ``keyed``: pass the key. ``signs``: the command signs an instruction
        with it, so it runs holding the key's lock (see the module's notes).

        Raises :class:`SplitUpError` when it exits non-zero (the binary's
        message), :class:`SplitUpTimeout` when it runs past ``timeout`` (it
        is killed), :class:`BinaryNotFoundError` when it cannot be started.
        """
        argv = [self.binary, *command, *options, *self._flags(keyed, ledger), "--json"]
        if positionals:
            argv += ["--", *positionals]
        limit = self.timeout if timeout is None else timeout
        env = {**os.environ, **self.env}
        with self._signing() if signs else contextlib.nullcontext():
            try:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    timeout=limit,
                )
            except subprocess.TimeoutExpired as e:
                stderr = (e.stderr or b"").decode("utf-8", "replace")
                raise SplitUpTimeout(
                    f"`splitup {' '.join(command)}` did not finish within {limit:g} s and was stopped",
                    stderr=stderr,
                    command=argv,
                ) from None
            except OSError as e:
                raise BinaryNotFoundError(f"cannot run {self.binary!r}: {e}; {BUILD_HINT}", command=argv) from e
        stderr = done.stderr.decode("utf-8", "replace")
        if done.returncode != 0:
            raise SplitUpError(_error_message(stderr, done.returncode), done.returncode, stderr, argv)
        out = done.stdout.decode("utf-8", "replace").strip()
        try:
            doc = json.loads(out)
        except ValueError:
            raise SplitUpError(
                f"`splitup {' '.join(command)} --json` did not print one JSON document: {out[:500]!r}",
                done.returncode,
                stderr,
                argv,
            ) from None
        if not isinstance(doc, dict):
            raise SplitUpError(f"`splitup {' '.join(command)} --json` printed {out[:500]!r}, not an object")
        return doc

    def _key_file(self) -> Optional[str]:
        """The real path of the key file the binary signs with (``None`` if it has none)."""
        if self.key is not None:
            return os.path.realpath(self.key)
        try:
            return os.path.realpath(self._call(["keys", "show"], keyed=True, ledger=False)["path"])
        except SplitUpError:
            return None  # the signing command will say what is wrong with the key

    @contextlib.contextmanager
    def _signing(self) -> Iterator[None]:
        """Holds the key's lock: this process's for the key file, then the advisory file lock beside it."""
        path = self._key_file()
        if path is None:
            yield
            return
        with _key_locks_guard:
            lock = _key_locks.setdefault(path, threading.Lock())
        with lock:
            lock_file = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")
            handle = None
            if fcntl is not None:
                try:
                    handle = open(lock_file, "a")
                    fcntl.flock(handle, fcntl.LOCK_EX)
                except OSError:
                    # A read-only directory, a file system without locks:
                    # threads are still serialised, processes are not.
                    if handle is not None:
                        handle.close()
                    handle = None
            try:
                yield
            finally:
                if handle is not None:
                    handle.close()  # releases the flock

    # -- keys and money ---------------------------------------------------------

    def new_key(self, path: Optional[PathLike] = None) -> Dict[str, Any]:
        """Creates a key file (refusing to overwrite one): ``{"public_key", "path"}``.

        ``path=None`` writes the default key, ``SPLITUP_HOME/key.json``. This
        does not change the key this client signs with; make a new
        ``Client(key=path)`` for that.
        """
        options = [f"--output={os.fspath(path)}"] if path is not None else []
        return self._call(["keys", "new"], options, ledger=False)

    def faucet(self, amount: Optional[int] = None) -> Dict[str, Any]:
        """Development ledgers only (``ledger start --dev``): mints ``amount`` USDC to this key.

        ``None`` mints the ledger's default (5000 USDC). Returns
        ``{"public_key", "minted_micro_usdc", "balance_micro_usdc"}``.
        """
        options = [f"--amount={_whole(amount, 'amount')}"] if amount is not None else []
        return self._call(["faucet"], options, keyed=True)

    def balance(self) -> Dict[str, Any]:
        """This key's account: ``{"public_key", "balance_micro_usdc", "nonce", "node"}``.

        ``node`` is ``None`` unless the key runs a node. 1 USDC is 1,000,000
        micro-USDC.
        """
        return self._call(["balance"], keyed=True)

    # -- models -----------------------------------------------------------------

    def deploy(
        self,
        path: PathLike,
        vram: Union[str, int],
        *,
        dims: Optional[Mapping[str, int]] = None,
        shapes: Optional[Mapping[str, Sequence[int]]] = None,
        values: Optional[Mapping[str, Union[float, Sequence[float]]]] = None,
        calibration_inputs: Optional[Mapping[str, Union[ArrayLike, PathLike]]] = None,
        randomize_weights: Optional[int] = None,
        timeout: float = DEPLOY_TIMEOUT,
    ) -> int:
        """Partitions a model, uploads its tasks, registers it; returns the new model id.

        Args:
            path: an ``.onnx`` file, or ``"@tiny"`` for the generated 8-layer
                transformer.
            vram: the memory of every node the tasks must fit, as the binary
                reads it (``"12GiB"``, ``"700KiB"``, ``"1.5GB"``) or a number of
                bytes. Smaller means more, smaller tasks.
            dims: named symbolic dimensions to fix, e.g. ``{"batch": 1, "seq": 128}``.
            shapes: whole shapes of inputs whose dimensions are unnamed,
                e.g. ``{"images": (1, 3, 224, 224)}``.
            values: inputs to freeze to a value (they become constants of the
                plan and stop being inputs), e.g. ``{"sr": 16000}``.
            calibration_inputs: one representative input per model input (an
                array, or a path to an ``.npy`` file). Each task is run at
                several precisions on them to set the tolerance disputes are
                judged by; without them, seeded random inputs are used.
            randomize_weights: replace ``ConstantOfShape`` weights (as in
                ONNX's test models) with ones drawn from this seed.
            timeout: seconds the whole deployment may take.

        The plan's table (tasks, memory, cuts) is in the binary's standard
        error; :meth:`models` lists the model with its number of tasks.
        """
        options = [f"--vram={_size(vram)}"]
        for name, n in (dims or {}).items():
            options.append(f"--dim={_name(name, 'dims')}={_whole(n, f'dims[{name!r}]')}")
        for name, shape in (shapes or {}).items():
            d = ",".join(str(_whole(x, f"shapes[{name!r}]")) for x in shape)
            options.append(f"--shape={_name(name, 'shapes')}={d}")
        for name, v in (values or {}).items():
            vs = np.atleast_1d(np.asarray(v, dtype=np.float64)).ravel()
            options.append(f"--value={_name(name, 'values')}={','.join(repr(float(x)) for x in vs)}")
        if randomize_weights is not None:
            options.append(f"--randomize-weights={_whole(randomize_weights, 'randomize_weights')}")
        model = os.fspath(path)
        with tempfile.TemporaryDirectory(prefix="splitup-deploy-") as tmp:
            for i, (name, value) in enumerate((calibration_inputs or {}).items()):
                if isinstance(value, (str, os.PathLike)):
                    file = os.fspath(value)
                else:
                    file = _write_npy(Path(tmp) / f"calibration{i}.npy", value, name)
                options.append(f"--calibration-input={_name(name, 'calibration_inputs')}={file}")
            doc = self._call(["deploy"], options, [model], keyed=True, signs=True, timeout=timeout)
        return int(doc["model"])

    def models(self) -> List[Dict[str, Any]]:
        """Every model registered, active or not: ``[{"id", "name", "tasks", "active", "owner"}]``."""
        return list(self._call(["models"])["models"])

    def undeploy(self, model_id: int) -> Dict[str, Any]:
        """Deactivates a model this key deployed: new executions are refused, running ones finish.

        Returns ``{"model", "name", "active", "was_active", "executions_in_progress"}``.
        """
        return self._call(["undeploy"], positionals=[str(_whole(model_id, "model_id"))], keyed=True, signs=True)

    def nodes(self) -> List[Dict[str, Any]]:
        """Every node the ledger knows (key, VRAM, stake, status, the tasks it supports …)."""
        return list(self._call(["nodes"])["nodes"])

    # -- executions -------------------------------------------------------------

    def run(
        self,
        model_id: int,
        inputs: Mapping[str, ArrayLike],
        *,
        timeout: float = RUN_TIMEOUT,
        priority: int = 0,
    ) -> Dict[str, np.ndarray]:
        """Runs a deployed model on the network and returns its outputs by name.

        :meth:`submit`, then :meth:`wait` until every task has completed,
        then :meth:`fetch`, which downloads the outputs and acknowledges
        them (so the network deletes the execution's tensors). Costs this
        key the execution's fee. Safe to call from several threads at once.

        Args:
            model_id: the id :meth:`deploy` returned (or one from :meth:`models`).
            inputs: one array per model input, by the input's name. Arrays
                must have the dtype and shape the model takes: an ``int64``
                model input needs ``int64`` data, and ``float64`` data for a
                ``float32`` input is refused, not converted.
            timeout: seconds to wait for the execution to finish.
            priority: each unit adds 0.05 USDC to the fee.

        Returns:
            ``{output name: array}``, in the model's output order.

        Raises:
            ExecutionFailed: the execution failed on the network.
            SplitUpTimeout: it did not finish within ``timeout``. It keeps
                running; :attr:`SplitUpTimeout.execution` is its id, for
                :meth:`wait` and :meth:`fetch`.
            SplitUpError: anything else, e.g. an unknown model, or an input
                whose name, dtype or shape the model does not take (refused
                before anything is paid).
        """
        _positive(timeout, "timeout")
        execution = self.submit(model_id, inputs, priority=priority)
        self.wait(execution, timeout=timeout)
        return self.fetch(execution)

    def submit(self, model_id: int, inputs: Mapping[str, ArrayLike], *, priority: int = 0) -> int:
        """Submits inputs to a deployed model without waiting; returns the execution id.

        Follow with :meth:`wait` and :meth:`fetch` (or :meth:`status`).
        The inputs are checked against the model (names, dtypes, shapes)
        before anything is paid.
        """
        with tempfile.TemporaryDirectory(prefix="splitup-submit-") as tmp:
            options = _input_options(inputs, Path(tmp) / "inputs")
            options.append(f"--priority={_whole(priority, 'priority')}")
            doc = self._call(["submit"], options, [str(_whole(model_id, "model_id"))], keyed=True, signs=True)
        return int(doc["execution"])

    def wait(self, execution_id: int, *, timeout: float = RUN_TIMEOUT, poll_interval: float = 1.0) -> Dict[str, Any]:
        """Waits until an execution has finished; returns its final :meth:`status`.

        Looks at its status after 0.05 s, then at intervals growing by half
        each time up to ``poll_interval`` seconds (short executions return
        quickly, long ones cost one short process a second). Raises
        :class:`ExecutionFailed` if it failed, :class:`SplitUpTimeout` (with
        the execution id) if it is still in progress after ``timeout``.
        """
        _positive(timeout, "timeout")
        deadline = time.monotonic() + timeout
        pause = POLL_FIRST
        while True:
            s = self.status(execution_id)
            if s["status"] == "Completed":
                return s
            if s["status"] == "Failed":
                raise ExecutionFailed(int(execution_id), s["failure"])
            if s["status"] != "InProgress":
                raise SplitUpError(f"execution {execution_id} is in an unknown state {s['status']!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                done = sum(t["state"] == "Completed" for t in s["tasks"])
                raise SplitUpTimeout(
                    f"execution {execution_id} did not finish within {timeout:g} s "
                    f"({done} of {len(s['tasks'])} tasks completed; it keeps running)",
                    execution=int(execution_id),
                )
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, poll_interval)

    def fetch(self, execution_id: int) -> Dict[str, np.ndarray]:
        """Downloads a completed execution's outputs and acknowledges them: ``{name: array}``.

        Acknowledging tells the ledger the outputs are safe here, so the
        network deletes the execution's tensors at once rather than after
        its retention time.

        Raises :class:`SplitUpError` if the execution is still in progress,
        failed, or its outputs were already deleted (acknowledged by an
        earlier fetch or ``run``, or past the ledger's retention time).
        """
        with tempfile.TemporaryDirectory(prefix="splitup-fetch-") as tmp:
            out = Path(tmp) / "outputs"
            doc = self._call(
                ["fetch"], [f"--output={out}"], [str(_whole(execution_id, "execution_id"))], keyed=True, signs=True
            )
            return _read_outputs(doc)

    def status(self, execution_id: Optional[int] = None) -> Dict[str, Any]:
        """An execution's state, or with no id the ledger's.

        For an execution: ``{"execution", "model", "user", "status"
        ("InProgress" | "Completed" | "Failed"), "failure", "escrow_micro_usdc",
        "fetched", "tasks": [{"task", "state", "node", "attempts", "timeouts",
        "challenged", "validator", "verdict", "commitment", "deadline_ms"}]}``.
        Without one: the ledger's slot, counts, supply and its 20 newest
        executions (``"recent"``). Every field is in ``docs/cli-json.md``.
        """
        positionals = [] if execution_id is None else [str(_whole(execution_id, "execution_id"))]
        return self._call(["status"], positionals=positionals)


# -- helpers ---------------------------------------------------------------------


def _whole(n: Any, what: str) -> int:
    """``n`` as a non-negative int (``bool`` and non-integral floats refused)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{what} must be a non-negative integer, not {n!r}")
    return int(n)


def _size(vram: Union[str, int]) -> str:
    if isinstance(vram, str) and vram.strip():
        return vram.strip()
    if isinstance(vram, (int, np.integer)) and not isinstance(vram, bool) and vram > 0:
        return str(int(vram))
    raise ValueError(f"vram must be a size such as '12GiB' or a positive number of bytes, not {vram!r}")


def _name(name: Any, what: str) -> str:
    """A model input's name as the binary's ``NAME=…`` arguments can carry it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: names must be non-empty strings, not {name!r}")
    if "=" in name:
        raise ValueError(f"{what}: {name!r} contains '=', which the splitup command line cannot pass (NAME=VALUE)")
    return name


def _write_npy(path: Path, value: ArrayLike, name: str) -> str:
    """Writes ``value`` as a little-endian, C-ordered ``.npy`` (what the binary reads); returns the path."""
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"input {name!r} has dtype {a.dtype}: SplitUp carries bool, integer and float tensors only"
        )
    a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, a, allow_pickle=False)
    return str(path)


def _input_options(inputs: Mapping[str, ArrayLike], directory: Path) -> List[str]:
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping {{name: array}}, not {type(inputs).__name__}")
    options = []
    for i, (name, value) in enumerate(inputs.items()):
        file = _write_npy(directory / f"input{i}.npy", value, _name(name, "inputs"))
        options.append(f"--input={name}={file}")
    return options


def _read_outputs(doc: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Reads the ``.npy`` files a ``submit --wait``/``fetch`` document lists, checking dtype and shape."""
    outputs: Dict[str, np.ndarray] = {}
    for o in doc["outputs"]:
        a = np.load(o["path"], allow_pickle=False)
        if str(a.dtype) != o["dtype"] or list(a.shape) != list(o["shape"]):
            raise SplitUpError(
                f"output {o['name']!r}: {o['path']} holds {a.dtype} {list(a.shape)}, "
                f"the binary reported {o['dtype']} {o['shape']}"
            )
        outputs[o["name"]] = a
    return outputs


"""SplitUp from Python: deploy ONNX models to a SplitUp network and run them on numpy arrays.

The client drives the ``splitup`` binary (built from this repository with
``cargo build --release -p splitup-cli``) and reads its ``--json`` answers::

    import numpy as np
    from splitup import Client

    c = Client("http://127.0.0.1:7878", key="user.json")
    model = c.deploy("model.onnx", vram="700KiB", dims={"batch": 1, "seq": 8})
    outputs = c.run(model, {"input_ids": np.array([[2, 7, 1, 8, 2, 8, 1, 8]], dtype=np.int64)})

See :class:`Client` for every operation and :mod:`splitup.errors` for what
each failure raises.
"""

from .client import Client, find_binary
from .errors import BinaryNotFoundError, ExecutionFailed, SplitUpError, SplitUpTimeout

__version__ = "0.1.0"
"""The package's version: the SplitUp workspace's (``Cargo.toml``'s ``[workspace.package] version``)."""

__all__ = [
    "Client",
    "find_binary",
    "SplitUpError",
    "BinaryNotFoundError",
    "ExecutionFailed",
    "SplitUpTimeout",
    "__version__",
]

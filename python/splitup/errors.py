"""The exceptions the client raises.

Every failure of the ``splitup`` binary becomes a :class:`SplitUpError`
carrying the binary's own message (its ``error: …`` lines, with every
``caused by:``), its exit code and the whole of its standard error, so
nothing the binary said is lost. The subclasses let a caller tell apart
the cases it may want to handle: the binary cannot be found, an execution
failed on the network, or a wait ran out of time.
"""

from __future__ import annotations

from typing import Optional, Sequence


class SplitUpError(Exception):
    """A ``splitup`` command failed, or its answer was not what the client expects.

    Attributes:
        message: what went wrong, in the binary's words when it said
            something (``error: unknown model 99`` …).
        returncode: the binary's exit code (1 failure, 2 invalid command
            line, 3 split and unsplit outputs disagree), or ``None`` when
            the error was found in Python (no process, a malformed answer).
        stderr: everything the binary wrote to standard error (tables,
            progress, notes and the error), for diagnosis.
        command: the command line that was run, when there was one.
    """

    def __init__(
        self,
        message: str,
        returncode: Optional[int] = None,
        stderr: str = "",
        command: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.stderr = stderr
        self.command = list(command) if command is not None else None

    def __str__(self) -> str:
        if self.returncode is None:
            return self.message
        return f"{self.message} (exit code {self.returncode})"


class BinaryNotFoundError(SplitUpError):
    """The ``splitup`` binary is not where the client was told to look.

    The message says where it looked and how to build or point at one.
    """


class ExecutionFailed(SplitUpError):
    """An execution ended ``Failed`` on the network (the reason in :attr:`failure`).

    Attributes:
        execution: the execution id.
        failure: the ledger's reason, as ``status`` reports it.
    """

    def __init__(
        self,
        execution: int,
        failure: Optional[str],
        returncode: Optional[int] = None,
        stderr: str = "",
        command: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(f"execution {execution} failed: {failure}", returncode, stderr, command)
        self.execution = execution
        self.failure = failure


class SplitUpTimeout(SplitUpError, TimeoutError):
    """A wait or a command ran past its time limit.

    Also a :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    The execution, if one was submitted, is still running on the network:
    :attr:`execution` is its id when the client knows it (``None`` when
    the binary was killed before it said).
    """

    def __init__(
        self,
        message: str,
        execution: Optional[int] = None,
        returncode: Optional[int] = None,
        stderr: str = "",
        command: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(message, returncode, stderr, command)
        self.execution = execution

"""Stopping a training run cleanly: the first SIGINT or SIGTERM asks the loop to stop after the iteration under
way (so a checkpoint is written and Ray shuts down); a second one interrupts at once.

Handling the signal as a flag, not as an exception raised wherever the main thread happens to be, matters here:
a ``KeyboardInterrupt`` raised inside Ray or RLlib code can be swallowed there (the run trains on) or escape past
the cleanup, and a signal that arrives mid-update leaves nothing consistent to save.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """A context manager; ``requested`` names the first stop signal received, or is None.

    Example:
        >>> with GracefulStop() as stop:  # doctest: +SKIP
        ...     while not stop.requested and iteration < iterations:
        ...         train_one_iteration()
    """

    def __init__(self, announce: bool = True) -> None:
        self.requested: signal.Signals | None = None
        self.announce = announce
        self._saved: dict[int, object] = {}

    @property
    def exit_code(self) -> int:
        """The shell's convention for a run ended by a signal (130 for SIGINT, 143 for SIGTERM), else 0."""
        return 128 + int(self.requested) if self.requested is not None else 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:  # the second signal: stop now
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} received twice")
        self.requested = signal.Signals(signum)
        if self.announce:
            print(
                f"\n{self.requested.name} received: stopping after the current iteration, with a checkpoint "
                f"(send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in STOP_SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._saved = {}

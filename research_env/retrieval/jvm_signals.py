"""Keep the embedded JVM's signal handlers when another runtime in the same process takes them.

HotSpot uses SIGSEGV, SIGBUS, SIGFPE and SIGILL as part of normal execution: implicit null checks,
safepoint polls and stack banging fault on purpose, and its handler turns the fault into a Java
exception or a safepoint. ``ray.init`` installs Abseil's failure-signal handler for the same signals, so
in a process that already embeds pyserini's JVM the next Java ``NullPointerException`` (or safepoint)
kills the process with SIGSEGV and no hs_err file. We record the JVM's own handlers when it starts and
put them back whenever they have been replaced; a genuine crash is then reported by the JVM (hs_err)
instead of by Ray.

The JVM also takes SIGINT and SIGTERM and exits at once on them (code 130 on Ctrl-C), skipping
``KeyboardInterrupt``, ``finally`` blocks and checkpoint writes. It needs neither signal (they only run
its shutdown hooks), so :class:`python_keeps_signals` gives them back to Python.

Handlers are read and written with ``sigaction(2)`` through ctypes, as opaque bytes: Python's
``signal`` module cannot save or restore a handler installed from C.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading

#: The signals HotSpot handles itself during normal execution (POSIX; Windows has no sigaction and HotSpot
#: uses structured exceptions there, so everything here is a no-op on it).
JVM_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL) if os.name == "posix" else ()
_ACTION_BYTES = 512  # larger than struct sigaction on every libc (152 bytes on glibc x86-64)

_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
_recorded: dict[int, bytes] = {}
_lock = threading.Lock()


def _action(sig: int) -> bytes:
    buffer = ctypes.create_string_buffer(_ACTION_BYTES)
    if _libc.sigaction(sig, None, buffer) != 0:
        raise OSError(ctypes.get_errno(), f"sigaction({sig}) could not be read")
    return buffer.raw


def _install(sig: int, action: bytes) -> None:
    if _libc.sigaction(sig, ctypes.create_string_buffer(action, _ACTION_BYTES), None) != 0:
        raise OSError(ctypes.get_errno(), f"sigaction({sig}) could not be set")


def record_jvm_handlers(*, if_unrecorded: bool = False) -> None:
    """Remember the handlers the JVM installed; call right after it started.

    ``if_unrecorded=True`` records only when nothing is recorded yet: for a JVM that someone else started
    (importing pyserini does), the handlers installed when we first see it are the best guess there is.
    """
    with _lock:
        if not (if_unrecorded and _recorded):
            _recorded.update({sig: _action(sig) for sig in JVM_SIGNALS})


def reclaim_jvm_signal_handlers() -> list[signal.Signals]:
    """Put back every JVM handler that something else replaced; returns the signals restored.

    A no-op (an empty list) when the JVM has not started in this process. Cheap enough to call before
    every call into Java (one ``sigaction`` read per signal); call it right after ``ray.init`` too, since
    the JVM's own threads may fault before the next search does.
    """
    restored = []
    with _lock:
        for sig, action in _recorded.items():
            if _action(sig) != action:
                _install(sig, action)
                restored.append(signal.Signals(sig))
    return restored


class python_keeps_signals:
    """Around the JVM's start: put Python's SIGINT and SIGTERM handlers back once the JVM has taken them.

    Only the main thread may set Python handlers: a JVM first started from another thread (the retrieval
    service's worker) keeps its own, and the server handles its signals itself.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        self.saved = {sig: signal.getsignal(sig) for sig in self.SIGNALS} if main else {}

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            if handler is not None:  # None: installed from C by someone else; not ours to restore
                signal.signal(sig, handler)

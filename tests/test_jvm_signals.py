"""The embedded JVM (pyserini) shares its process with Ray and with Python's own signal handling.

Each test runs a fresh Python process, as a user's training script would: the JVM starts on the first
search, and what comes after must not kill the process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A Java NullPointerException raised by an implicit null check: HotSpot's SIGSEGV handler turns the fault
# into the exception, so it only works while the JVM owns SIGSEGV.
_JAVA_NPE = textwrap.dedent("""
    def java_npe():
        from jnius import autoclass
        try:
            autoclass("java.lang.String").valueOf(None)  # String.valueOf(char[] null): reads its length
        except Exception as e:
            return "NullPointerException" in str(e)
        return False
""")


def _run(body: str, timeout: float = 240) -> subprocess.CompletedProcess:
    script = _JAVA_NPE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


def test_java_exceptions_survive_ray_init_and_shutdown_in_the_same_process():
    """ray.init installs its crash handler for SIGSEGV/SIGBUS/SIGFPE/SIGILL, and ray.shutdown resets them to
    the default: without the JVM's handlers back, the next Java exception is a segfault (exit -11)."""
    done = _run("""
        import ray
        from research_env.retrieval import reclaim_jvm_signal_handlers, shared_retriever

        retriever = shared_retriever()
        first = [d.id for d in retriever.search(["Baring"], 3)[0]]
        assert java_npe()
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        print("replaced by ray.init:", len(reclaim_jvm_signal_handlers()))
        assert java_npe()
        ray.shutdown()
        assert [d.id for d in retriever.search(["Baring"], 3)[0]] == first  # the search reclaims them itself
        assert java_npe()
        print("java exceptions still work")
    """)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert "replaced by ray.init: 4" in done.stdout  # the fault signals were really taken
    assert "java exceptions still work" in done.stdout


def test_a_jvm_started_by_someone_else_is_protected_too():
    """A user script may start the JVM itself (importing pyserini does) before our retriever first runs."""
    done = _run("""
        import os
        import jnius_config
        from research_env.retrieval.jvm import anserini_jar, java_home

        os.environ["JAVA_HOME"] = str(java_home())
        jnius_config.add_classpath(str(anserini_jar()))
        import jnius  # the JVM starts here, outside research_env, as pyserini's own set-up would start it
        import ray
        from research_env.retrieval import shared_retriever

        retriever = shared_retriever()
        retriever.search(["Baring"], 3)
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        assert retriever.search(["Baring"], 3)[0]
        assert java_npe()
        ray.shutdown()
        print("java exceptions still work")
    """)
    assert done.returncode == 0 and "java exceptions still work" in done.stdout, (done.returncode, done.stderr[-3000:])


def test_ctrl_c_raises_keyboard_interrupt_with_the_jvm_running():
    """The JVM's own SIGINT handler exits at once (130): a run interrupted with Ctrl-C must instead get
    KeyboardInterrupt, run its cleanup, and find the embedded index still answering."""
    done = _run(
        """
        import signal, time
        from research_env.retrieval import shared_retriever

        # Python's own Ctrl-C handler, even where this test inherits SIGINT ignored (a background job's)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        retriever = shared_retriever()
        retriever.search(["Baring"], 1)
        try:
            signal.raise_signal(signal.SIGINT)  # to this (the main) thread, as the terminal's Ctrl-C reaches it
            time.sleep(60)
        except KeyboardInterrupt:
            print("cleanup ran", len(retriever.search(["Baring"], 1)[0]))
    """,
        timeout=120,
    )
    assert done.returncode == 0 and "cleanup ran 1" in done.stdout, (done.returncode, done.stderr[-2000:])

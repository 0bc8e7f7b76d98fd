"""Loads the emulated kernels (build/libemu_{float,double}.so, made by run.sh) and
launches them like src/backend/cuda/runtime.rs: a grid, a block, dynamic shared
bytes, and one 8-byte word per kernel parameter.

Every buffer comes from `Lib.arr` / `Lib.idx`, which places it so that it ends
exactly where an inaccessible page (PROT_NONE) begins: any read or write past its
end kills the process with SIGSEGV (faulthandler prints the stack of the launch). The bytes before it are filled with NaN (reals) / 0xFFFFFFFF (indices) and
checked bit for bit after every launch, so a write before its start fails too.
Each word is checked against the kernel's parameter type (real* / unsigned int* /
long long / double), so a wrapper that passes its words in the wrong order fails.
"""
import atexit
import ctypes
import faulthandler
import mmap
import json
import os
import pathlib
import sys
import weakref

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD = HERE / "build"
PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_launched = set()


def _record():
    name = os.environ.get("EMU_TEST_NAME") or pathlib.Path(sys.argv[0]).stem
    (BUILD / f"launched_{name}.txt").write_text("".join(f"{k}\n" for k in sorted(_launched)))


atexit.register(_record)
faulthandler.enable()  # a SIGSEGV (a guard page) prints the launching test's stack


class Config:
    """A launch configuration (cudarc's LaunchConfig)."""

    def __init__(self, grid, block, shared=0):
        self.grid = tuple(grid) + (1,) * (3 - len(grid))
        self.block = tuple(block) + (1,) * (3 - len(block))
        self.shared = shared

    def __repr__(self):
        return f"grid {self.grid} block {self.block} shared {self.shared}"


# The launch helpers of runtime.rs.
def elements(n):
    return Config((-(-n // 256),), (256,))


def per_row(rows, threads):
    return Config((rows,), (threads,))


class Lib:
    # Weak references to the padded bases of every buffer, shared by both programs
    # (an f32 basis is launched from the float program on f64 vectors).
    live = []

    def __init__(self, real):
        self.real = real
        self.np = np.float32 if real == "float" else np.float64
        self.lib = ctypes.CDLL(str(BUILD / f"libemu_{real}.so"))
        self.kernels = json.loads((BUILD / "kernels.json").read_text())
        for name, k in self.kernels.items():
            fn = getattr(self.lib, "run_" + name)
            fn.argtypes = [ctypes.c_uint] * 7 + [self._ctype(t) for t, _ in k["params"]]
            fn.restype = ctypes.c_int

    @staticmethod
    def _ctype(t):
        if "*" in t:
            return ctypes.c_void_p
        if t == "double":
            return ctypes.c_double
        if t == "long long":
            return ctypes.c_longlong
        raise TypeError(f"kernel parameter type {t!r} is not an 8-byte word")

    def _padded(self, x, dtype, fill):
        x = np.asarray(x, dtype=dtype)
        item = np.dtype(dtype).itemsize
        pages = -(-max(x.size * item, 1) // PAGE) + 1  # at least one page of front slack
        mm = mmap.mmap(-1, (pages + 1) * PAGE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        if _libc.mprotect(addr + pages * PAGE, PAGE, 0) != 0:  # the page after: PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect")
        whole = np.frombuffer(mm, dtype=dtype, count=pages * PAGE // item)
        start = whole.size - x.size
        whole[:start] = fill
        view = whole[start:]
        view[...] = x.reshape(-1)
        self.live.append((weakref.ref(view), whole[max(start - 64, 0) : start].copy(), whole, start))
        return view.reshape(x.shape)

    def arr(self, x):
        """A device buffer of reals holding x (any shape), guarded."""
        return self._padded(x, self.np, np.nan)

    def full(self, shape, value):
        return self.arr(np.full(shape, value, dtype=np.float64))

    def idx(self, x):
        """A device buffer of u32 indices, guarded."""
        return self._padded(x, np.uint32, 0xFFFFFFFF)

    def f64(self, x):
        """A device buffer of doubles (vector.cu's `double*`, whatever `real` is)."""
        return self._padded(x, np.float64, np.nan)

    def u64(self, x):
        """A device buffer of 8-byte words (space.rs's slot tables: addresses, then
        coefficient bits)."""
        return self._padded(x, np.uint64, 0xFFFFFFFFFFFFFFFF)

    def check_guards(self, name):
        alive = []
        for ref, front, whole, start in self.live:
            if ref() is None:
                continue  # the buffer is gone (its memory stays mapped until `whole` goes)
            alive.append((ref, front, whole, start))
            if whole[start - front.size : start].tobytes() != front.tobytes():
                raise AssertionError(f"{name}: a write before the start of a buffer")
        Lib.live[:] = alive

    def launch(self, name, config, words):
        """runtime.rs's `cuda.launch::<T>(name, config, &words)`."""
        if name not in self.kernels:
            raise KeyError(f"no kernel {name}")
        params = self.kernels[name]["params"]
        if len(words) != len(params):
            raise TypeError(f"{name}: {len(words)} words for {len(params)} parameters")
        if 0 in config.grid:
            return  # runtime.rs skips empty grids
        conv = []
        for w, (t, pname) in zip(words, params):
            if "*" in t:
                if w is None:
                    conv.append(None)
                    continue
                if not isinstance(w, np.ndarray):
                    raise TypeError(f"{name}: parameter {pname} ({t}) got {type(w).__name__}")
                if t.count("*") == 2:
                    want = np.uint64  # a table of slot addresses (vector.cu)
                elif "unsigned int" in t:
                    want = np.uint32
                elif "double" in t:
                    want = np.float64
                else:
                    want = self.np
                if w.dtype != want or not w.flags["C_CONTIGUOUS"]:
                    raise TypeError(f"{name}: parameter {pname} ({t}) got a {w.dtype} buffer")
                conv.append(w.ctypes.data)
            elif t == "double":
                if not isinstance(w, float):
                    raise TypeError(f"{name}: parameter {pname} (double) got {w!r}")
                conv.append(w)
            else:
                if isinstance(w, np.ndarray) or isinstance(w, float) or w is None:
                    raise TypeError(f"{name}: parameter {pname} (long long) got {type(w).__name__}")
                conv.append(int(w))
        _launched.add(name)
        if os.environ.get("EMU_VERBOSE"):
            print(f"   launching {name} {config}", file=sys.stderr, flush=True)
        getattr(self.lib, "run_" + name)(*config.grid, *config.block, config.shared, *conv)
        self.check_guards(name)


def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shape {a.shape} != {b.shape}")
    if a.size == 0:
        return 0.0
    if not np.isfinite(a).all():
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


TOL = {"double": 1e-13, "float": 1e-5}
worst = {}


def check(real, what, got, want, tol=None, exact=False):
    """Relative max error of got vs the f64 reference; `exact`: equal to the reference
    rounded to the kernel's precision."""
    tol = 0.0 if exact else (TOL[real] if tol is None else tol)
    if exact:  # a copy or a selection: bit for bit in the kernel's precision
        want = np.asarray(want, dtype=np.float32 if real == "float" else np.float64)
    e = rel(got, want)
    ok = e <= tol
    print(f"{'ok ' if ok else 'BAD'} {real:6} {what}: {e:.2e}")
    if not ok:
        check.failed = True
    worst[real] = max(worst.get(real, 0.0), e)


check.failed = False


def finish():
    print("max rel error: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(worst.items())))
    sys.exit(1 if check.failed else 0)

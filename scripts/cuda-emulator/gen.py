"""Generates build/emu_{float,double}.cpp and build/kernels.json from the kernel
sources in src/backend/cuda/kernels (common.cuh first, then every .cu file, sorted:
the same single program NVRTC compiles). Each `extern "C" __global__` kernel gets a
C entry point `run_<name>(gx, gy, gz, bx, by, bz, shared_bytes, <kernel params>)`.
"""
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KERNELS = ROOT / "src" / "backend" / "cuda" / "kernels"
BUILD = HERE / "build"

KERNEL_RE = re.compile(r'extern "C" __global__ void (\w+)\((.*?)\)\s*\{', re.S)
DYN_SHARED_RE = re.compile(r"extern __shared__ real (\w+)\[\];")


def sources():
    files = [KERNELS / "common.cuh"] + sorted(KERNELS.glob("*.cu"))
    return [(f.name, f.read_text()) for f in files]


def kernels():
    """name -> {file, params: [(type, name)]} for every kernel of every file."""
    out = {}
    for fname, text in sources():
        for name, params in KERNEL_RE.findall(text):
            ps = []
            for p in params.split(","):
                p = " ".join(p.split())
                pname = re.split(r"[\s*]+", p)[-1]
                ptype = p[: len(p) - len(pname)].strip()
                ps.append((ptype, pname))
            out[name] = {"file": fname, "params": ps}
    return out


def main():
    BUILD.mkdir(exist_ok=True)
    ks = kernels()
    for real in ("float", "double"):
        src = f'#include "{HERE / "emu.h"}"\ntypedef {real} real;\n'
        for fname, text in sources():
            # Dynamic shared memory: exactly the launch's bytes (emu.h), not a static array.
            text = DYN_SHARED_RE.sub(r"#define \1 ((real*)g_dyn_shared.data())", text)
            src += f'#line 1 "{fname}"\n{text}\n'
        for name, k in ks.items():
            decl = ", ".join(f"{t} {n}" for t, n in k["params"])
            call = ", ".join(n for _, n in k["params"])
            src += (
                f'extern "C" int run_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, '
                f"unsigned by, unsigned bz, unsigned shared_bytes, {decl}) {{ return run_grid(gx, gy, "
                f"gz, bx, by, bz, shared_bytes, [&] {{ {name}({call}); }}); }}\n"
            )
        (BUILD / f"emu_{real}.cpp").write_text(src)
    (BUILD / "kernels.json").write_text(json.dumps(ks, indent=1))
    print(f"gen: {len(ks)} kernels from {len(sources())} files", file=sys.stderr)


if __name__ == "__main__":
    main()

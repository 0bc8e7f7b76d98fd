"""Static check of every `cuda.launch::<T>("kernel", config, &[words])` in
src/backend/cuda/*.rs against the kernel's parameter list in kernels/*.cu: the same
number of words as parameters, and each word's name (stripped of `.ptr()`,
`size(..)`, `cuda.address(..)`, ...) matching the parameter's name, up to the
aliases listed below. Catches a wrapper that passes its words in another order
than the kernel takes them, which the numeric tests would only see through the
python twins in wrappers.py."""
import json
import re
import sys

from harness import BUILD, ROOT

# (Rust word after normalising, kernel parameter) pairs spelled differently on purpose.
ALIASES = {
    ("idx.len()", "nnz"),
    ("u64::from(accumulate)", "accumulate"),
    ("stats_ptr", "stats"),
    ("head_dim", "hd"),
}


def normalise(word):
    w = word.strip()
    for pat in (r"^size\((.*)\)$", r"^scalar\((.*)\)$", r"^cuda\.address\((.*)\)$", r"^opt_ptr(?:_mut)?\((.*)\)$",
                r"^(.*)\.ptr\(\)$"):
        m = re.match(pat, w)
        if m:
            w = m.group(1)
    return w


def main():
    kernels = json.loads((BUILD / "kernels.json").read_text())
    launch = re.compile(r'launch::<T>\(\s*"(\w+)",\s*(?:[^,()]|\([^()]*\))+,\s*&\[(.*?)\],?\s*\)', re.S)
    failed, seen = False, set()
    for path in sorted((ROOT / "src/backend/cuda").glob("*.rs")):
        text = path.read_text()
        for name, body in launch.findall(text):
            seen.add(name)
            words = [w for w in (x.strip() for x in re.split(r",(?![^(]*\))", body)) if w]
            params = [p for _, p in kernels[name]["params"]] if name in kernels else None
            if params is None:
                print(f"BAD {path.name}: launches {name}, which no kernel defines")
                failed = True
                continue
            if len(words) != len(params):
                print(f"BAD {path.name}: {name} gets {len(words)} words for {len(params)} parameters")
                failed = True
                continue
            bad = []
            for w, p in zip(words, params):
                n = normalise(w)
                if n != p and (n, p) not in ALIASES:
                    bad.append(f"{w} -> {p}")
            if bad:
                print(f"BAD {path.name}: {name}: word/parameter names differ: {'; '.join(bad)}")
                failed = True
            else:
                print(f"ok  {path.name}: {name}: {len(words)} words match the parameters")
    missing = sorted(set(kernels) - seen)
    if missing:
        print(f"note: kernels no wrapper launches: {' '.join(missing)}")
    sys.exit(1 if failed else 0)


main()

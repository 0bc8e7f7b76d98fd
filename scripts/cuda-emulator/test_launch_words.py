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
    # space.rs: slot tables (addresses, then coefficients at table + m words),
    # partial-sum rows, nulls (0) and unit scalars, the Hessian operator's casts.
    ("table", "vecs"),
    ("table + (m * size_of::<u64>()) as u64", "coeffs"),
    ("transform_addr", "transform"),
    ("self.row(partials, 0)", "partials"),
    ("self.row(partials, row + 1)", "partials"),
    ("self.row(partials, first)", "partials"),
    ("sums", "out"),
    ("self.dim", "n"),
    ("self.blocks", "count"),
    ("copy", "dst"),
    ("target", "dst"),
    ("push_addr", "push"),
    ("0", "push"),
    ("0", "x_out"),
    ("0", "z"),
    ("xa", "x_out"),
    ("1.0", "alpha"),
    ("1.0", "scale"),
    ("x", "a"),  # vec_dot_partial(a, b)
    ("y", "b"),
    ("ya", "y"),
    ("za", "z"),
    ("ya", "out"),
    ("ya", "dst"),
    ("xa", "x"),
    ("xa", "src"),
    ("xa", "ax"),
    ("oa", "out"),
    ("input", "dst"),
    ("output", "src"),
    ("n", "k"),
    ("column", "out"),
    ("s.vecs[j]", "src"),
}


def normalise(word):
    w = word.strip()
    for pat in (r"^size\((.*)\)$", r"^scalar\((.*)\)$", r"^cuda\.address\((.*)\)$", r"^opt_ptr(?:_mut)?\((.*)\)$",
                r"^(.*)\.ptr\(\)$", r"^self\.addr\((.*)\)$", r"^&(.*)$"):
        m = re.match(pat, w)
        if m:
            w = m.group(1)
    return w


def word_lists(text):
    """(kernel, [words]) of every `launch::<T>` / `launch::<f64>` call, the word list
    cut at its matching bracket (words may index, `&s.vecs[j]`)."""
    for m in re.finditer(r'launch::<\w+>\(\s*"(\w+)",', text):
        i = text.index("&[", m.end()) + 2
        depth, j = 1, i
        while depth:
            depth += {"[": 1, "(": 1, "]": -1, ")": -1}.get(text[j], 0)
            j += 1
        body, words, depth, cur = text[i : j - 1], [], 0, ""
        for ch in body:  # split at top-level commas
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            if ch == "," and depth == 0:
                words.append(cur.strip())
                cur = ""
            else:
                cur += ch
        if cur.strip():
            words.append(cur.strip())
        yield m.group(1), words


def main():
    kernels = json.loads((BUILD / "kernels.json").read_text())
    failed, seen = False, set()
    for path in sorted((ROOT / "src/backend/cuda").glob("*.rs")):
        text = path.read_text()
        for name, words in word_lists(text):
            seen.add(name)
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

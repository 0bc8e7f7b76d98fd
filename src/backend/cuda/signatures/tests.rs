//! The launch sites of the wrappers against the kernels' parameter lists: every
//! `launch::<T>("kernel", config, &[words])` in `src/backend/cuda/*.rs` must name a
//! kernel of `kernels/*.cu` and pass one word per parameter, each word named like
//! its parameter (up to [`ALIASES`]), so that words passed in another order than
//! the kernel takes them fail here too. Needs no GPU.

use std::path::Path;

use super::*;
use crate::backend::cuda::runtime::{SOURCES, kernel_table};

/// (word after [`normalise`], kernel parameter) pairs spelled differently on
/// purpose: the checker's only tolerance.
const ALIASES: &[(&str, &str)] = &[
    ("idx.len()", "nnz"),
    ("u64::from(accumulate)", "accumulate"),
    ("stats_ptr", "stats"),
    ("head_dim", "hd"),
    // space.rs: slot tables (addresses, then coefficients at table + m words),
    // partial-sum rows, nulls (0) and unit scalars, the Hessian operator's casts.
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
    ("x", "a"), // vec_dot_partial(a, b)
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
];

/// One `launch::<T>(...)` call of a wrapper source.
#[derive(Debug)]
struct LaunchSite {
    line: usize,
    kernel: String,
    words: Vec<String>,
}

/// `source` with its comments blanked out byte for byte (newlines kept, so
/// offsets and line numbers hold), and the byte ranges of its string literals.
fn rust_code(source: &str) -> (String, Vec<std::ops::Range<usize>>) {
    let b = source.as_bytes();
    let mut code = b.to_vec();
    let mut strings = Vec::new();
    let blank = |code: &mut Vec<u8>, range: std::ops::Range<usize>| {
        for byte in &mut code[range] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    };
    let ident = |i: usize| i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n);
                blank(&mut code, i..end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Block comments nest in Rust.
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if b[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut code, i..j);
                i = j;
            }
            b'r' if !ident(i) || (i > 0 && b[i - 1] == b'b' && !ident(i - 1)) => {
                // A raw string r"..." or r#"..."# (or br"..."), else an identifier.
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let mut close = b"\"".to_vec();
                close.extend(std::iter::repeat_n(b'#', hashes));
                let body = i + 2 + hashes;
                let end = b[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |n| body + n + close.len());
                strings.push(i..end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                strings.push(i..j + 1);
                i = j + 1;
            }
            b'\'' => {
                // A character literal ('x', '\'', '·'), else a lifetime ('a).
                let width = source[i + 1..].chars().next().map_or(1, char::len_utf8);
                if b.get(i + 1) == Some(&b'\\') {
                    let end = b
                        .get(i + 3..)
                        .and_then(|r| r.iter().position(|&c| c == b'\''));
                    i = end.map_or(b.len(), |n| i + 3 + n + 1);
                } else if b.get(i + 1 + width) == Some(&b'\'') {
                    i += width + 2;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    // Only whole comments were blanked, with ASCII bytes: still UTF-8.
    let code = String::from_utf8(code).unwrap_or_default();
    (code, strings)
}

/// Splits `text` at its top-level commas (outside (), [] and {}), dropping a
/// trailing empty piece; returns the pieces and where the enclosing bracket
/// closes (the first unmatched closer), if it does.
fn split_top_level(text: &str) -> (Vec<String>, Option<usize>) {
    let mut pieces = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => {
                pieces.push(text[start..i].to_string());
                return (tidy(pieces), Some(i));
            }
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                pieces.push(text[start..i].to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(text[start..].to_string());
    (tidy(pieces), None)
}

/// Pieces with their whitespace collapsed, a trailing empty one dropped.
fn tidy(pieces: Vec<String>) -> Vec<String> {
    let mut pieces: Vec<String> = pieces
        .iter()
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if pieces.last().is_some_and(String::is_empty) {
        pieces.pop();
    }
    pieces
}

/// Every launch site of one wrapper source, or why one cannot be read (a kernel
/// name that is not a string literal, words that are not a literal array): the
/// check must see every launch, so an unreadable one fails it.
fn launch_sites(file: &str, source: &str) -> Vec<Result<LaunchSite, String>> {
    let (code, strings) = rust_code(source);
    code.match_indices("launch::<")
        .filter(|(at, _)| !strings.iter().any(|s| s.contains(at)))
        .map(|(at, _)| {
            let line = code[..at].matches('\n').count() + 1;
            let fail = |what: String| format!("{file}:{line}: {what}");
            let after = &code[at + "launch::<".len()..];
            let open = after
                .find('(')
                .ok_or_else(|| fail("a launch without arguments".into()))?;
            let (args, close) = split_top_level(&after[open + 1..]);
            let [kernel, _config, words] = &args[..] else {
                return Err(fail(format!(
                    "a launch with {} arguments, not 3",
                    args.len()
                )));
            };
            if close.is_none() {
                return Err(fail("an unclosed launch".into()));
            }
            let kernel = kernel
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .ok_or_else(|| {
                    fail(format!(
                        "the kernel `{kernel}` is not a string literal, so the check cannot \
                         follow it"
                    ))
                })?;
            let words = words
                .strip_prefix("&[")
                .and_then(|w| w.strip_suffix(']'))
                .ok_or_else(|| {
                    fail(format!(
                        "the words of the launch of `{kernel}` are `{words}`, not a literal \
                         array `&[...]`, so the check cannot count them"
                    ))
                })?;
            Ok(LaunchSite {
                line,
                kernel: kernel.to_string(),
                words: split_top_level(words).0,
            })
        })
        .collect()
}

/// A word as the parameter it fills would be named: `size(n)` -> `n`,
/// `out.ptr()` -> `out`, `cuda.address(idx)` -> `idx`, `&x` -> `x`, ...
fn normalise(word: &str) -> &str {
    let mut w = word.trim();
    for prefix in [
        "size(",
        "scalar(",
        "cuda.address(",
        "opt_ptr(",
        "opt_ptr_mut(",
    ] {
        if let Some(inner) = w.strip_prefix(prefix).and_then(|r| r.strip_suffix(')')) {
            w = inner;
        }
    }
    if let Some(inner) = w.strip_suffix(".ptr()") {
        w = inner;
    }
    if let Some(inner) = w
        .strip_prefix("self.addr(")
        .and_then(|r| r.strip_suffix(')'))
    {
        w = inner;
    }
    w.strip_prefix('&').unwrap_or(w)
}

/// Every problem of the launch sites of `wrappers` (file name, source) against
/// `table`, and the kernels they launch.
fn check_wrappers(
    table: &KernelTable,
    wrappers: &[(String, String)],
) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut launched = Vec::new();
    for (file, source) in wrappers {
        for site in launch_sites(file, source) {
            let site = match site {
                Ok(site) => site,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            };
            let at = format!("{file}:{}", site.line);
            launched.push(site.kernel.clone());
            let Some(kernel) = table.get(&site.kernel) else {
                problems.push(format!(
                    "{at}: launches `{}`, which no kernel defines",
                    site.kernel
                ));
                continue;
            };
            if site.words.len() != kernel.params.len() {
                problems.push(format!(
                    "{at}: `{}` gets {} words for {} parameters ({})",
                    site.kernel,
                    site.words.len(),
                    kernel.params.len(),
                    kernel.file
                ));
                continue;
            }
            let differ: Vec<String> = site
                .words
                .iter()
                .zip(&kernel.params)
                .filter(|(w, p)| {
                    let w = normalise(w);
                    w != p.as_str() && !ALIASES.contains(&(w, p.as_str()))
                })
                .map(|(w, p)| format!("{} -> {p}", normalise(w)))
                .collect();
            if !differ.is_empty() {
                problems.push(format!(
                    "{at}: `{}`: words named unlike their parameters: {}",
                    site.kernel,
                    differ.join("; ")
                ));
            }
        }
    }
    (problems, launched)
}

/// Every `.rs` file of the CUDA backend (this file included: its synthetic
/// launches sit in string literals, which the checker must skip).
fn wrapper_sources() -> Result<Vec<(String, String)>, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda");
    let mut files = Vec::new();
    for dir in [dir.clone(), dir.join("signatures")] {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                files.push((name.unwrap_or_default(), text));
            }
        }
    }
    files.sort();
    Ok(files)
}

#[test]
fn every_launch_passes_one_named_word_per_kernel_parameter() -> Result<(), String> {
    let table = kernel_table().as_ref().map_err(Clone::clone)?;
    let (problems, launched) = check_wrappers(table, &wrapper_sources()?);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Not a vacuous pass: the sites found launch every kernel of the program.
    let mut unlaunched: Vec<&String> = table.keys().filter(|&k| !launched.contains(k)).collect();
    unlaunched.sort();
    assert!(
        unlaunched.is_empty(),
        "kernels no wrapper launches (or launches the checker missed): {unlaunched:?}"
    );
    assert!(launched.len() >= table.len(), "{} launches", launched.len());
    Ok(())
}

#[test]
fn the_program_has_every_kernel_file_and_eight_byte_parameters() -> Result<(), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda/kernels");
    for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
        let name = entry.map_err(|e| e.to_string())?.file_name();
        let name = name.to_string_lossy();
        assert!(
            SOURCES.iter().any(|(source, _)| *source == name),
            "kernels/{name} is not in runtime.rs's SOURCES, so NVRTC never compiles it"
        );
    }
    let table = kernel_table().as_ref().map_err(Clone::clone)?;
    let add = table.get("ew_add_assign").ok_or("no ew_add_assign")?;
    assert_eq!(add.params, ["dst", "src", "n"]);
    assert_eq!(add.file, "elementwise.cu");
    let attention = table.get("attn_forward").ok_or("no attn_forward")?;
    assert_eq!(
        attention.params,
        [
            "out", "probs", "q", "k", "v", "key_mask", "seq", "heads", "hd"
        ]
    );
    Ok(())
}

#[test]
fn launches_with_the_wrong_word_count_are_refused_at_run_time() -> Result<(), String> {
    let table = kernel_table().as_ref().map_err(Clone::clone)?;
    check_launch(table, "ew_add_assign", 3)?;
    assert_eq!(
        check_launch(table, "ew_add_assign", 2),
        Err(
            "launching `ew_add_assign`: 2 argument words for its 3 parameters (dst, src, n) \
             in elementwise.cu"
                .into()
        )
    );
    let err = check_launch(table, "ew_add_asign", 3).unwrap_err();
    assert!(
        err.contains("`ew_add_asign`: no kernel of that name"),
        "{err}"
    );
    Ok(())
}

/// Two kernels, and two more commented out (which must not count).
const SYNTHETIC_CU: &str = r#"
// extern "C" __global__ void retired(real* out) {}
extern "C" __global__ void scale_rows(real* out, const real* inp, double alpha,
                                      long long rows, long long width) {
    out[0] = alpha * inp[0]; // "a string in a comment
}
/* extern "C" __global__ void also_retired(real* out, long long n) {} */
extern "C" __global__ void fill(real* out, long long n) { out[0] = '"'; }
"#;

/// A good launch, four bad ones, and launch-like text in a comment and a string.
const SYNTHETIC_RS: &str = r##"
fn good<T: CudaScalar>(cuda: &Cuda, out: DeviceViewMut<'_, T>, inp: DeviceView<'_, T>) {
    let quote = '"';
    cuda.launch::<T>(
        "scale_rows",
        elements(rows * width),
        &[out.ptr(), inp.ptr(), scalar(alpha), size(rows), size(width),],
    );
    // cuda.launch::<T>("fill", elements(n), &[out.ptr()]);
    let text = r#"cuda.launch::<T>("fill", elements(n), &[])"#;
}
fn bad<T: CudaScalar>(cuda: &Cuda) {
    cuda.launch::<T>("scale_rows", elements(n), &[out.ptr(), inp.ptr(), size(rows), size(width)]);
    cuda.launch::<T>("scale_rows", LaunchConfig { grid_dim: (1, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 }, &[out.ptr(), inp.ptr(), scalar(alpha), size(width), size(rows)]);
    cuda.launch::<f64>("fil", elements(n), &[out.ptr(), size(n)]);
    cuda.launch::<T>("fill", elements(n), &words);
}
"##;

/// The 1-based line of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).unwrap_or(text.len());
    text[..at].matches('\n').count() + 1
}

#[test]
fn the_checker_catches_a_slip_in_a_synthetic_pair() -> Result<(), String> {
    let table = parse_program(&[("synthetic.cu", SYNTHETIC_CU)])?;
    let mut kernels: Vec<(&str, usize)> = table
        .iter()
        .map(|(name, k)| (name.as_str(), k.params.len()))
        .collect();
    kernels.sort();
    assert_eq!(kernels, [("fill", 2), ("scale_rows", 5)]);

    let wrappers = [("wrappers.rs".to_string(), SYNTHETIC_RS.to_string())];
    let (problems, launched) = check_wrappers(&table, &wrappers);
    let at = |needle: &str| format!("wrappers.rs:{}", line_of(SYNTHETIC_RS, needle));
    assert_eq!(
        problems,
        [
            format!(
                "{}: `scale_rows` gets 4 words for 5 parameters (synthetic.cu)",
                at("inp.ptr(), size(rows), size(width)]")
            ),
            format!(
                "{}: `scale_rows`: words named unlike their parameters: width -> rows; \
                 rows -> width",
                at("size(width), size(rows)]")
            ),
            format!("{}: launches `fil`, which no kernel defines", at("\"fil\"")),
            format!(
                "{}: the words of the launch of `fill` are `&words`, not a literal array \
                 `&[...]`, so the check cannot count them",
                at("&words")
            ),
        ]
    );
    assert_eq!(launched, ["scale_rows", "scale_rows", "scale_rows", "fil"]);
    Ok(())
}

#[test]
fn kernels_the_launch_words_cannot_fill_are_refused() {
    let refused = |source: &str| {
        parse_program(&[("k.cu", source)]).map_or_else(|e| e, |t| format!("accepted: {t:?}"))
    };
    let err = refused("\nextern \"C\" __global__ void k(real* out, int n) {}");
    assert!(
        err.starts_with("k.cu:2: kernel `k`: parameter `n` is `int`, not 8 bytes"),
        "{err}"
    );
    let err = refused("extern \"C\" __global__ void k(real x, long long n) {}");
    assert!(err.contains("parameter `x` is `real`"), "{err}");
    let err = refused("__global__ void k(real* out) {}");
    assert!(err.contains("without extern \"C\""), "{err}");
    let twice = parse_program(&[
        ("a.cu", "extern \"C\" __global__ void k(double* x) {}"),
        ("b.cu", "extern \"C\" __global__ void k(double* y) {}"),
    ]);
    assert_eq!(
        twice,
        Err("b.cu: kernel `k` is also defined in a.cu".to_string())
    );
    // Unsigned and const 8-byte scalars, launch bounds, and no parameters at all.
    let table = parse_program(&[(
        "ok.cu",
        "extern \"C\" __global__ void __launch_bounds__(256) k(const unsigned long long n, \
         const double s) {}\nextern \"C\" __global__ void none(void) {}",
    )]);
    let table = table.unwrap_or_default();
    assert_eq!(table.get("k").map(|k| k.params.len()), Some(2));
    assert_eq!(table.get("none").map(|k| k.params.len()), Some(0));
}

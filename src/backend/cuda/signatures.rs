//! The kernels' parameter lists, read from their CUDA C sources.
//!
//! A launch passes one 8-byte word per kernel parameter, and the driver cannot tell
//! a kernel that it got too few or too many: it reads whatever lies in the
//! parameter buffer. So the parameter list of every kernel is parsed from the
//! sources embedded in the binary (the text NVRTC compiles), [`check_launch`]
//! refuses a launch whose word count differs before it reaches the driver, and the
//! tests check every launch site of the wrappers (`src/backend/cuda/*.rs`) against
//! the same table on machines without a GPU.

use std::collections::HashMap;

/// One `extern "C" __global__` kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Kernel {
    /// The source file defining it.
    pub file: String,
    /// Its parameters' names, in order (each type checked to be 8 bytes wide).
    pub params: Vec<String>,
}

/// Every kernel of a program, by name.
pub(crate) type KernelTable = HashMap<String, Kernel>;

/// The kernels of `sources` (file name, text), each parameter checked to be 8
/// bytes wide. Any kernel the parser cannot read, a parameter of another width, or
/// a name defined twice is an error naming the file and line.
pub(crate) fn parse_program(sources: &[(&str, &str)]) -> Result<KernelTable, String> {
    let mut table = KernelTable::new();
    for &(file, source) in sources {
        for (name, kernel) in parse_kernels(file, source)? {
            if let Some(first) = table.get(&name) {
                return Err(format!(
                    "{file}: kernel `{name}` is also defined in {}",
                    first.file
                ));
            }
            table.insert(name, kernel);
        }
    }
    Ok(table)
}

/// Checks a launch of `kernel` with `words` parameter words against `table`.
pub(crate) fn check_launch(table: &KernelTable, kernel: &str, words: usize) -> Result<(), String> {
    let Some(found) = table.get(kernel) else {
        return Err(format!(
            "launching `{kernel}`: no kernel of that name in kernels/*.cu"
        ));
    };
    if found.params.len() != words {
        return Err(format!(
            "launching `{kernel}`: {words} argument words for its {} parameters ({}) in {}",
            found.params.len(),
            found.params.join(", "),
            found.file
        ));
    }
    Ok(())
}

/// The `extern "C" __global__` kernels of one source file, in order.
fn parse_kernels(file: &str, source: &str) -> Result<Vec<(String, Kernel)>, String> {
    let code = strip_c_comments(source);
    let mut kernels = Vec::new();
    for (at, _) in code.match_indices("__global__") {
        let line = code[..at].matches('\n').count() + 1;
        let fail = |what: &str| format!("{file}:{line}: {what}");
        if !code[..at].trim_end().ends_with("extern \"C\"") {
            return Err(fail(
                "a __global__ function without extern \"C\": it cannot be launched by name",
            ));
        }
        let mut rest = code[at + "__global__".len()..].trim_start();
        rest = rest
            .strip_prefix("void")
            .filter(|r| r.starts_with(char::is_whitespace))
            .ok_or_else(|| fail("expected `void` after __global__"))?
            .trim_start();
        if let Some(bounds) = rest.strip_prefix("__launch_bounds__") {
            let close = bounds
                .find(')')
                .ok_or_else(|| fail("unclosed __launch_bounds__"))?;
            rest = bounds[close + 1..].trim_start();
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        let list = rest[name_len..]
            .trim_start()
            .strip_prefix('(')
            .filter(|_| !name.is_empty())
            .ok_or_else(|| fail("expected the kernel's name and `(`"))?;
        let close = list
            .find(')')
            .ok_or_else(|| fail(&format!("kernel `{name}`: unclosed parameter list")))?;
        let params = parse_params(&list[..close])
            .map_err(|what| fail(&format!("kernel `{name}`: {what}")))?;
        let kernel = Kernel {
            file: file.to_string(),
            params,
        };
        kernels.push((name.to_string(), kernel));
    }
    Ok(kernels)
}

/// The parameter names of a parameter list (the text between the parentheses).
fn parse_params(list: &str) -> Result<Vec<String>, String> {
    let list = list.trim();
    if list.is_empty() || list == "void" {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|param| {
            let param = param.split_whitespace().collect::<Vec<_>>().join(" ");
            let name_start = param
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            let (ty, name) = param.split_at(name_start);
            let ty = ty.trim();
            if name.is_empty() || ty.is_empty() {
                return Err(format!("cannot read the parameter `{param}`"));
            }
            if !is_eight_bytes(ty) {
                return Err(format!(
                    "parameter `{name}` is `{ty}`, not 8 bytes wide: a launch passes one \
                     8-byte word per parameter (a pointer, `long long` or `double`)"
                ));
            }
            Ok(name.to_string())
        })
        .collect()
}

/// Whether a parameter type is 8 bytes wide on the device: a pointer, or one of
/// the 8-byte scalar types the wrappers pass (`long long`, `double`).
fn is_eight_bytes(ty: &str) -> bool {
    if ty.contains('*') {
        return true;
    }
    let words: Vec<&str> = ty
        .split_whitespace()
        .filter(|w| !matches!(*w, "const" | "volatile" | "__restrict__"))
        .collect();
    matches!(
        words[..],
        ["long", "long"]
            | ["long", "long", "int"]
            | ["unsigned", "long", "long"]
            | ["unsigned", "long", "long", "int"]
            | ["double"]
    )
}

/// `source` with its comments replaced by spaces (newlines kept, so line numbers
/// hold); string and character literals are left alone.
fn strip_c_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                while let Some(&next) = chars.peek() {
                    if next == '\n' {
                        break;
                    }
                    chars.next();
                }
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for next in chars.by_ref() {
                    if next == '\n' {
                        out.push('\n');
                    }
                    if last == '*' && next == '/' {
                        break;
                    }
                    last = next;
                }
                out.push(' ');
            }
            '"' | '\'' => {
                out.push(c);
                while let Some(next) = chars.next() {
                    out.push(next);
                    if next == '\\' {
                        if let Some(escaped) = chars.next() {
                            out.push(escaped);
                        }
                    } else if next == c || next == '\n' {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;

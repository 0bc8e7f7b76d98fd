//! PyTorch `.bin` checkpoints (the zip archive of `torch.save`), read as untrusted
//! input.
//!
//! A pickle is a program: unpickling calls whatever global it names, which is how
//! a crafted `.bin` runs `os.system`. maskscape never executes a pickle, and before
//! candle-core's reader interprets one, [`scan`] walks its opcodes and refuses any
//! global outside the handful that rebuild tensors (the same idea as PyTorch's own
//! `weights_only` unpickler). The tensor data is then read straight from the
//! archive's storage entries.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::DType;

use super::dtype::StoredDtype;
use super::stored::{Location, StoredTensor};
use crate::error::{Error, Result};

/// The globals a state dict of tensors may name: the tensor-rebuilding functions,
/// the storage types, and the containers `torch.save` wraps them in.
const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch._tensor", "Tensor"),
    ("torch", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
];

/// Checks that the pickle program `code` names only [`ALLOWED_GLOBALS`] and uses
/// no extension-registry lookups; returns the refusal reason otherwise.
///
/// `GLOBAL` and `INST` carry their target inline. `STACK_GLOBAL` takes it from the
/// two values on top of the stack, which are known only when the instructions just
/// before it pushed two strings (as every pickler emits it); anything else is
/// refused as unverifiable. Every callable a `REDUCE`, `BUILD`, `OBJ` or `NEWOBJ`
/// can reach comes from one of these, so checking them covers those too.
pub fn scan(code: &[u8]) -> std::result::Result<(), String> {
    let mut scanner = Scanner { code, pos: 0 };
    // Strings among the values pushed since the last instruction that consumed
    // stack values: the top of the stack, as far as STACK_GLOBAL needs it.
    let mut recent: Vec<Option<String>> = Vec::new();
    let mut memo: HashMap<u64, Option<String>> = HashMap::new();
    loop {
        let at = scanner.pos;
        let op = scanner.byte().ok_or("pickle ends without a STOP opcode")?;
        let mut push = |value: Option<String>| recent.push(value);
        match op {
            b'.' => return Ok(()),
            b'c' | b'i' => {
                let module = scanner.line()?;
                let name = scanner.line()?;
                check_global(&module, &name)?;
                if op == b'c' {
                    push(None);
                } else {
                    recent.clear();
                }
            }
            0x93 => {
                let n = recent.len();
                let (Some(Some(module)), Some(Some(name))) = (
                    n.checked_sub(2).map(|i| &recent[i]),
                    n.checked_sub(1).map(|i| &recent[i]),
                ) else {
                    return Err(format!(
                        "STACK_GLOBAL at byte {at} takes its target from values that are not literal strings"
                    ));
                };
                check_global(module, name)?;
                recent.truncate(n - 2);
                recent.push(None);
            }
            0x82..=0x84 => {
                return Err(format!(
                    "extension-registry opcode (EXT) at byte {at}: not part of a tensor checkpoint"
                ));
            }
            // Strings.
            b'X' => push(Some(scanner.sized_string(4)?)),
            0x8c => push(Some(scanner.sized_string(1)?)),
            0x8d => push(Some(scanner.sized_string(8)?)),
            b'V' => push(Some(scanner.line()?)),
            b'S' => {
                let literal = scanner.line()?;
                push(Some(
                    literal.trim_matches(|c| c == '\'' || c == '"').to_string(),
                ));
            }
            b'T' => push(Some(scanner.sized_string(4)?)),
            b'U' => push(Some(scanner.sized_string(1)?)),
            // Memo: PUT family stores the top, GET family pushes a stored value.
            b'p' => {
                let index = scanner
                    .line()?
                    .parse::<u64>()
                    .map_err(|e| format!("PUT at byte {at}: {e}"))?;
                memo.insert(index, recent.last().cloned().flatten());
            }
            b'q' | b'r' => {
                let index = scanner.uint(if op == b'q' { 1 } else { 4 })?;
                memo.insert(index, recent.last().cloned().flatten());
            }
            0x94 => {
                let index = memo.len() as u64;
                memo.insert(index, recent.last().cloned().flatten());
            }
            b'g' => {
                let index = scanner
                    .line()?
                    .parse::<u64>()
                    .map_err(|e| format!("GET at byte {at}: {e}"))?;
                push(memo.get(&index).cloned().flatten());
            }
            b'h' | b'j' => {
                let index = scanner.uint(if op == b'h' { 1 } else { 4 })?;
                push(memo.get(&index).cloned().flatten());
            }
            // Other values that are pushed without consuming anything.
            b'(' | b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f | 0x97 => push(None),
            b'K' => scanner.skip(1, push)?,
            b'M' => scanner.skip(2, push)?,
            b'J' => scanner.skip(4, push)?,
            b'G' => scanner.skip(8, push)?,
            b'I' | b'L' | b'F' => {
                scanner.line()?;
                push(None);
            }
            0x8a => scanner.sized_skip(1, push)?,
            0x8b => scanner.sized_skip(4, push)?,
            b'C' => scanner.sized_skip(1, push)?,
            b'B' => scanner.sized_skip(4, push)?,
            0x8e | 0x96 => scanner.sized_skip(8, push)?,
            // Framing and protocol markers change nothing.
            0x80 => {
                scanner.uint(1)?;
            }
            0x95 => {
                scanner.uint(8)?;
            }
            // Instructions that consume stack values (their callables, if any, were
            // checked when pushed).
            b'0' | b'1' | b'2' | b'R' | b'b' | b'o' | 0x81 | 0x92 | b'Q' | b'a' | b'e' | b's'
            | b'u' | b'd' | b'l' | b't' | 0x85 | 0x86 | 0x87 | 0x90 | 0x91 | 0x98 => recent.clear(),
            b'P' => {
                scanner.line()?;
                recent.clear();
            }
            other => return Err(format!("unknown pickle opcode 0x{other:02x} at byte {at}")),
        }
    }
}

fn check_global(module: &str, name: &str) -> std::result::Result<(), String> {
    if ALLOWED_GLOBALS.contains(&(module, name)) {
        Ok(())
    } else {
        Err(format!(
            "refusing global `{module}.{name}`: a checkpoint may only rebuild tensors"
        ))
    }
}

/// A cursor over pickle bytes; every read reports running off the end.
struct Scanner<'a> {
    code: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.code.len());
        let end = end.ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let bytes = &self.code[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.code.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn uint(&mut self, width: usize) -> std::result::Result<u64, String> {
        let bytes = self.take(width)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn line(&mut self) -> std::result::Result<String, String> {
        let rest = &self.code[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let text = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.pos += len + 1;
        Ok(text)
    }

    fn sized_string(&mut self, width: usize) -> std::result::Result<String, String> {
        let len = self.uint(width)? as usize;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn skip(
        &mut self,
        n: usize,
        mut push: impl FnMut(Option<String>),
    ) -> std::result::Result<(), String> {
        self.take(n)?;
        push(None);
        Ok(())
    }

    fn sized_skip(
        &mut self,
        width: usize,
        mut push: impl FnMut(Option<String>),
    ) -> std::result::Result<(), String> {
        let len = self.uint(width)? as usize;
        self.take(len)?;
        push(None);
        Ok(())
    }
}

/// The tensors of a `torch.save` zip archive, after [`scan`] approved its pickle.
pub fn open_pytorch_zip(path: &Path) -> Result<Vec<StoredTensor>> {
    let refuse = |message: String| Error::file(path, message);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        refuse(format!(
            "not a readable zip archive ({e}): truncated, or not the format of torch.save since PyTorch 1.6"
        ))
    })?;
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| refuse(format!("unreadable file name in the archive: {e}")))?;
    let pickles: Vec<&String> = names.iter().filter(|n| n.ends_with("data.pkl")).collect();
    if pickles.is_empty() {
        return Err(refuse(
            "no data.pkl in the archive: not a torch.save file".into(),
        ));
    }
    for name in &pickles {
        let mut code = Vec::new();
        archive
            .by_name(name)
            .and_then(|mut entry| Ok(entry.read_to_end(&mut code)?))
            .map_err(|e| refuse(format!("cannot read `{name}`: {e}")))?;
        scan(&code).map_err(|reason| refuse(format!("unsafe pickle `{name}`: {reason}")))?;
    }
    if let Some(order) = names.iter().find(|n| n.ends_with("/byteorder")) {
        let mut text = String::new();
        archive
            .by_name(order)
            .and_then(|mut entry| Ok(entry.read_to_string(&mut text)?))
            .map_err(|e| refuse(format!("cannot read `{order}`: {e}")))?;
        if text.trim() != "little" {
            return Err(refuse(format!(
                "byte order `{}` (only little-endian is read)",
                text.trim()
            )));
        }
    }
    let infos = candle_core::pickle::read_pth_tensor_info(path, false, None)
        .map_err(|e| refuse(format!("cannot read the PyTorch pickle: {e}")))?;
    // No tensor can need more bytes than the whole archive holds: checked before
    // any entry's declared size is trusted.
    let archive_len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    infos
        .into_iter()
        .map(|info| {
            let dtype = match info.dtype {
                DType::F16 => StoredDtype::F16,
                DType::BF16 => StoredDtype::BF16,
                DType::F32 => StoredDtype::F32,
                DType::F64 => StoredDtype::F64,
                other => {
                    return Err(refuse(format!(
                        "tensor `{}` has dtype {other:?}; weights must be f16, bf16, f32 or f64",
                        info.name
                    )));
                }
            };
            let shape = info.layout.dims().to_vec();
            let byte_offset = info.layout.start_offset() as u64;
            let needed = storage_bytes(&shape, dtype.size(), byte_offset).ok_or_else(|| {
                refuse(format!(
                    "tensor `{}` declares shape {shape:?}, whose size in bytes overflows",
                    info.name
                ))
            })?;
            if needed > archive_len {
                return Err(refuse(format!(
                    "tensor `{}` (shape {shape:?}) needs {needed} bytes, but the whole archive \
                     holds {archive_len}",
                    info.name
                )));
            }
            if !info.layout.is_contiguous() {
                return Err(refuse(format!(
                    "tensor `{}` is not stored contiguously (strides {:?})",
                    info.name,
                    info.layout.stride()
                )));
            }
            let available = archive
                .by_name(&info.path)
                .map(|entry| entry.size())
                .map_err(|e| refuse(format!("storage `{}` of tensor `{}`: {e}", info.path, info.name)))?;
            if available < needed {
                return Err(refuse(format!(
                    "storage `{}` of tensor `{}` holds {available} bytes, the tensor needs {needed}",
                    info.path, info.name
                )));
            }
            Ok(StoredTensor {
                name: info.name,
                dtype,
                shape,
                file: path.to_path_buf(),
                location: Location::Zipped {
                    entry: info.path,
                    byte_offset,
                },
            })
        })
        .collect()
}

/// The bytes from the start of a storage to the end of a tensor of `shape` with
/// elements of `size` bytes at `byte_offset`, or `None` when that overflows.
///
/// The product of the non-zero dimensions must fit even when another dimension is
/// zero: candle's contiguity test multiplies the dimensions from the last one, and
/// a wrapped product there would be a panic in a debug build.
fn storage_bytes(shape: &[usize], size: usize, byte_offset: u64) -> Option<u64> {
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let elements = if shape.contains(&0) { 0 } else { nonzero };
    let bytes = u64::try_from(elements.checked_mul(size)?).ok()?;
    bytes.checked_add(byte_offset)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::testing::TestResult;

    /// `pickle.dumps(os.system("echo pwned"))`-style payload at protocol 2:
    /// GLOBAL posix.system, the argument tuple, REDUCE.
    const SYSTEM_CALL: &[u8] =
        b"\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.";

    #[test]
    fn refuses_arbitrary_globals() {
        let err = scan(SYSTEM_CALL).unwrap_err();
        assert!(err.contains("posix.system"), "{err}");
        let eval = b"\x80\x02cbuiltins\neval\n)R.";
        assert!(scan(eval).unwrap_err().contains("builtins.eval"));
        // INST (protocol 0) carries the target inline too.
        let inst = b"(S'ls'\nios\nsystem\n.";
        assert!(scan(inst).unwrap_err().contains("os.system"));
    }

    #[test]
    fn stack_global_is_resolved_through_the_memo() {
        // Protocol 4: SHORT_BINUNICODE "os", MEMOIZE, SHORT_BINUNICODE "system",
        // MEMOIZE, STACK_GLOBAL.
        let direct = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93.";
        assert!(scan(direct).unwrap_err().contains("os.system"));
        // The same strings fetched back from the memo.
        let via_memo = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x30\x30h\x00h\x01\x93.";
        assert!(scan(via_memo).unwrap_err().contains("os.system"));
        // A target that is not two literal strings cannot be verified.
        let opaque = b"\x80\x04\x8c\x02os\x8c\x06system)\x30\x93.";
        assert!(scan(opaque).unwrap_err().contains("STACK_GLOBAL"));
        let allowed = b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R.";
        assert_eq!(scan(allowed), Ok(()));
    }

    #[test]
    fn accepts_tensor_rebuilding_and_rejects_damage() {
        let ok = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.";
        assert_eq!(scan(ok), Ok(()));
        assert!(scan(&ok[..ok.len() - 1]).unwrap_err().contains("STOP"));
        assert!(scan(b"\x80\x02\x82\x01.").unwrap_err().contains("EXT"));
        assert!(scan(b"\x80\x02\xff.").unwrap_err().contains("0xff"));
    }

    /// Writes a `torch.save`-style archive (stored entries, as torch writes them)
    /// holding one float32 tensor `w` with the given shape and strides, its
    /// storage `archive/data/0` being `storage`.
    fn write_archive(path: &Path, shape: &[i32], stride: &[i32], storage: &[u8]) -> TestResult {
        let ints = |values: &[i32]| -> Vec<u8> {
            let mut tuple = vec![b'('];
            for v in values {
                tuple.push(b'J');
                tuple.extend(v.to_le_bytes());
            }
            tuple.push(b't');
            tuple
        };
        // {"w": _rebuild_tensor_v2(persistent ("storage", FloatStorage, "0", "cpu",
        // numel), 0, shape, stride, False, OrderedDict())}
        let mut pickle =
            b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        pickle.extend(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n");
        pickle.extend(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00");
        pickle.extend(ints(shape));
        pickle.extend(ints(stride));
        pickle.extend(b"\x89ccollections\nOrderedDict\n)RtRs.");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in [
            ("archive/data.pkl", &pickle[..]),
            ("archive/byteorder", b"little"),
            ("archive/data/0", storage),
        ] {
            zip.start_file(name, options)?;
            zip.write_all(bytes)?;
        }
        zip.finish()?;
        Ok(())
    }

    #[test]
    fn declared_shapes_are_checked_against_the_archive() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pytorch_model.bin");
        let storage: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();

        // The archive as written reads back (so the refusals below are about size).
        write_archive(&path, &[2, 2], &[2, 1], &storage)?;
        let tensors = open_pytorch_zip(&path)?;
        let [tensor] = &tensors[..] else {
            return Err(format!("{} tensors, expected 1", tensors.len()).into());
        };
        assert_eq!(
            (tensor.name.as_str(), &tensor.shape[..]),
            ("w", &[2, 2][..])
        );
        let mut values = [0.0f64; 4];
        tensor.read_into(&mut values)?;
        assert_eq!(values, [1.0, 2.0, 3.0, 4.0]);

        // 10^18 float32s over a 16-byte storage.
        write_archive(
            &path,
            &[1_000_000_000, 1_000_000_000],
            &[1_000_000_000, 1],
            &storage,
        )?;
        let err = open_pytorch_zip(&path)
            .err()
            .ok_or("huge shape accepted")?
            .to_string();
        assert!(
            err.contains("pytorch_model.bin")
                && err.contains("needs 4000000000000000000 bytes")
                && err.contains("whole archive"),
            "{err}"
        );

        // 2^30 x 2^30 x 16 float32s: 2^64 elements, which an unchecked product wraps
        // to 0 (an empty tensor that fits any storage).
        write_archive(&path, &[1 << 30, 1 << 30, 16], &[1, 1, 1], &storage)?;
        let err = open_pytorch_zip(&path)
            .err()
            .ok_or("overflowing shape accepted")?
            .to_string();
        assert!(
            err.contains("pytorch_model.bin") && err.contains("overflows"),
            "{err}"
        );

        // A zero dimension does not hide an overflowing product of the others.
        assert_eq!(storage_bytes(&[0, 1 << 40, 1 << 40], 4, 0), None);
        assert_eq!(storage_bytes(&[0, 1 << 20], 4, 8), Some(8));
        assert_eq!(storage_bytes(&[3, 5], 2, 4), Some(34));
        Ok(())
    }
}

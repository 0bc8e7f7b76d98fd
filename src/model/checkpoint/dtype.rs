//! Element types a checkpoint can store, and the conversions between their
//! little-endian bytes and the scalar type the model computes in.

use crate::backend::Scalar;

/// The element type of a stored tensor (what `--dtype` of `init` selects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredDtype {
    F16,
    BF16,
    F32,
    F64,
}

impl StoredDtype {
    /// Every supported type, as spelled on the command line.
    pub const ALL: [StoredDtype; 4] = [Self::F16, Self::BF16, Self::F32, Self::F64];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F16 | Self::BF16 => 2,
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    /// The command-line name ("f16", "bf16", "f32", "f64").
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::F32 => "f32",
            Self::F64 => "f64",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The dtype tag of the safetensors header ("F16", "BF16", "F32", "F64").
    pub fn safetensors_tag(self) -> &'static str {
        match self {
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F32 => "F32",
            Self::F64 => "F64",
        }
    }

    /// PyTorch's name, as transformers writes it into `config.json` (`torch_dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::F32 => "float32",
            Self::F64 => "float64",
        }
    }

    /// The type of a safetensors dtype, or `None` for types a checkpoint may not hold.
    pub fn from_safetensors(dtype: safetensors::Dtype) -> Option<Self> {
        match dtype {
            safetensors::Dtype::F16 => Some(Self::F16),
            safetensors::Dtype::BF16 => Some(Self::BF16),
            safetensors::Dtype::F32 => Some(Self::F32),
            safetensors::Dtype::F64 => Some(Self::F64),
            _ => None,
        }
    }

    /// Decodes little-endian `bytes` (exactly `out.len() * self.size()` of them)
    /// into `out`, rounding to `T` where `T` is narrower than the stored type.
    pub fn decode_into<T: Scalar>(self, bytes: &[u8], out: &mut [T]) {
        debug_assert_eq!(bytes.len(), out.len() * self.size());
        match self {
            Self::F16 => decode_each(bytes, out, |b: [u8; 2]| {
                T::from_f32(half::f16::from_le_bytes(b).to_f32())
            }),
            Self::BF16 => decode_each(bytes, out, |b: [u8; 2]| {
                T::from_f32(half::bf16::from_le_bytes(b).to_f32())
            }),
            Self::F32 => decode_each(bytes, out, |b| T::from_f32(f32::from_le_bytes(b))),
            Self::F64 => decode_each(bytes, out, |b| T::from_f64(f64::from_le_bytes(b))),
        }
    }

    /// Appends the little-endian encoding of `values` to `out`, rounding to nearest.
    pub fn encode_extend(self, values: impl IntoIterator<Item = f64>, out: &mut Vec<u8>) {
        match self {
            Self::F16 => {
                for x in values {
                    out.extend_from_slice(&half::f16::from_f64(x).to_le_bytes());
                }
            }
            Self::BF16 => {
                for x in values {
                    out.extend_from_slice(&half::bf16::from_f64(x).to_le_bytes());
                }
            }
            Self::F32 => {
                for x in values {
                    out.extend_from_slice(&(x as f32).to_le_bytes());
                }
            }
            Self::F64 => {
                for x in values {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
}

impl std::fmt::Display for StoredDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes fixed-width little-endian elements one by one (no alignment required,
/// so slices of a memory map at any offset work).
fn decode_each<T, const W: usize>(bytes: &[u8], out: &mut [T], decode: impl Fn([u8; W]) -> T) {
    let (chunks, _) = bytes.as_chunks::<W>();
    for (&chunk, slot) in chunks.iter().zip(out.iter_mut()) {
        *slot = decode(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_every_dtype() {
        let values = [0.0, 1.0, -2.5, 0.1, 1e-3];
        for dtype in StoredDtype::ALL {
            let mut bytes = Vec::new();
            dtype.encode_extend(values, &mut bytes);
            assert_eq!(bytes.len(), values.len() * dtype.size());
            let mut back = [0.0f64; 5];
            dtype.decode_into(&bytes, &mut back);
            // Exact for representable values, within the type's half-ulp otherwise.
            let tolerance = match dtype {
                StoredDtype::F16 => 1e-3,
                StoredDtype::BF16 => 4e-3,
                StoredDtype::F32 => 1e-7,
                StoredDtype::F64 => 0.0,
            };
            for (x, y) in values.iter().zip(back) {
                assert!((x - y).abs() <= tolerance * x.abs(), "{dtype}: {x} -> {y}");
            }
            assert_eq!(back[2], -2.5);
        }
        assert_eq!(StoredDtype::from_name("bf16"), Some(StoredDtype::BF16));
        assert_eq!(StoredDtype::from_name("f8"), None);
    }

    #[test]
    fn decodes_known_bit_patterns() {
        // 1.0 in f16 is 0x3C00, in bf16 0x3F80 (little-endian bytes below).
        let mut out = [0.0f32; 1];
        StoredDtype::F16.decode_into(&[0x00, 0x3C], &mut out);
        assert_eq!(out[0], 1.0);
        StoredDtype::BF16.decode_into(&[0x80, 0x3F], &mut out);
        assert_eq!(out[0], 1.0);
    }
}

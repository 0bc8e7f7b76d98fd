//! The OPT configuration: every field of HuggingFace's `config.json` that changes
//! the mathematics of the network. Unknown fields are ignored.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The architecture of an OPT decoder, as read from `config.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OptConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub ffn_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    /// Width of the token embeddings; when it differs from `hidden_size` the model
    /// has `project_in` (embedding to hidden) and `project_out` (hidden to embedding).
    pub word_embed_proj_dim: usize,
    /// Pre-LayerNorm (125m, 1.3b, 13b, ...) when true, post-LayerNorm (350m) when false.
    pub do_layer_norm_before: bool,
    /// Drops the decoder's final LayerNorm even in the pre-LN layout.
    pub remove_final_layer_norm: bool,
    /// Biases on every linear layer of the decoder blocks.
    pub enable_bias: bool,
    /// LayerNorms carry a weight and a bias.
    pub layer_norm_elementwise_affine: bool,
    pub pad_token_id: u32,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    /// The LM head shares the token embedding matrix.
    pub tie_word_embeddings: bool,
}

/// OPT's learned positions are stored with an offset of 2 (a fairseq legacy).
pub const POSITION_OFFSET: usize = 2;

impl OptConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::file(path, "expected a JSON object"));
        };
        Self::from_map(&map, path)
    }

    /// Parses a config from a JSON object; `origin` names the source in errors.
    pub fn from_map(map: &Map<String, Value>, origin: &Path) -> Result<Self> {
        let fields = Fields { map, origin };
        if let Some(model_type) = map.get("model_type").and_then(Value::as_str)
            && model_type != "opt"
        {
            return Err(Error::file(
                origin,
                format!("model_type is \"{model_type}\", only \"opt\" is supported"),
            ));
        }
        let activation = fields.string_or("activation_function", "relu")?;
        if activation != "relu" {
            return Err(Error::Unsupported(format!(
                "{}: activation_function \"{activation}\" (only \"relu\" is implemented)",
                origin.display()
            )));
        }
        let hidden_size = fields.dim("hidden_size")?;
        let config = OptConfig {
            vocab_size: fields.dim("vocab_size")?,
            hidden_size,
            ffn_dim: fields.dim("ffn_dim")?,
            num_hidden_layers: fields.dim("num_hidden_layers")?,
            num_attention_heads: fields.dim("num_attention_heads")?,
            max_position_embeddings: fields.dim("max_position_embeddings")?,
            word_embed_proj_dim: fields
                .optional_dim("word_embed_proj_dim")?
                .unwrap_or(hidden_size),
            do_layer_norm_before: fields.bool_or("do_layer_norm_before", true)?,
            remove_final_layer_norm: fields.bool_or("_remove_final_layer_norm", false)?,
            enable_bias: fields.bool_or("enable_bias", true)?,
            layer_norm_elementwise_affine: fields.bool_or("layer_norm_elementwise_affine", true)?,
            pad_token_id: fields.token_or("pad_token_id", 1)?,
            bos_token_id: fields.token_or("bos_token_id", 2)?,
            eos_token_id: fields.token_or("eos_token_id", 2)?,
            tie_word_embeddings: fields.bool_or("tie_word_embeddings", true)?,
        };
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::file(
                origin,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        for (key, id) in [
            ("pad_token_id", self.pad_token_id),
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if id as usize >= self.vocab_size {
                return Err(Error::file(
                    origin,
                    format!(
                        "{key} {id} is outside the vocabulary of {}",
                        self.vocab_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether the embedding width differs from the hidden width (project_in/out exist).
    pub fn has_projections(&self) -> bool {
        self.word_embed_proj_dim != self.hidden_size
    }

    /// Whether the decoder ends with a LayerNorm (HuggingFace creates it only in the
    /// pre-LN layout, unless `_remove_final_layer_norm` is set).
    pub fn has_final_layer_norm(&self) -> bool {
        self.do_layer_norm_before && !self.remove_final_layer_norm
    }

    /// Serialises the config as HuggingFace's `config.json` (what transformers loads).
    pub fn to_hf_json(&self) -> Value {
        serde_json::json!({
            "_remove_final_layer_norm": self.remove_final_layer_norm,
            "activation_dropout": 0.0,
            "activation_function": "relu",
            "architectures": ["OPTForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "do_layer_norm_before": self.do_layer_norm_before,
            "dropout": 0.0,
            "enable_bias": self.enable_bias,
            "eos_token_id": self.eos_token_id,
            "ffn_dim": self.ffn_dim,
            "hidden_size": self.hidden_size,
            "init_std": 0.02,
            "layer_norm_elementwise_affine": self.layer_norm_elementwise_affine,
            "layerdrop": 0.0,
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": "opt",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_cache": true,
            "vocab_size": self.vocab_size,
            "word_embed_proj_dim": self.word_embed_proj_dim,
        })
    }
}

/// Typed access to the fields of a config object, with errors naming the key.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    origin: &'a Path,
}

impl Fields<'_> {
    fn wrong_type(&self, key: &str, expected: &str) -> Error {
        Error::file(self.origin, format!("key `{key}` must be {expected}"))
    }

    fn dim(&self, key: &str) -> Result<usize> {
        self.optional_dim(key)?.ok_or_else(|| Error::MissingKey {
            path: self.origin.to_path_buf(),
            key: key.to_string(),
        })
    }

    fn optional_dim(&self, key: &str) -> Result<Option<usize>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(self.wrong_type(key, "a positive integer")),
            },
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.wrong_type(key, "true or false")),
        }
    }

    fn token_or(&self, key: &str, default: u32) -> Result<u32> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.wrong_type(key, "a token id")),
        }
    }

    fn string_or(&self, key: &str, default: &str) -> Result<String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.wrong_type(key, "a string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    fn parse(json: &str) -> Result<OptConfig> {
        let map: serde_json::Map<String, Value> = serde_json::from_str(json)
            .map_err(|e| Error::file("config.json", format!("not valid JSON: {e}")))?;
        OptConfig::from_map(&map, Path::new("config.json"))
    }

    const TINY: &str = r#"{"vocab_size": 40, "hidden_size": 8, "ffn_dim": 16,
        "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 16,
        "word_embed_proj_dim": 6, "do_layer_norm_before": false, "unknown": [1]}"#;

    #[test]
    fn parses_fields_and_defaults() -> TestResult {
        let c = parse(TINY)?;
        assert_eq!(c.word_embed_proj_dim, 6);
        assert!(c.has_projections());
        assert!(!c.has_final_layer_norm());
        assert!(c.enable_bias && c.tie_word_embeddings);
        assert_eq!((c.pad_token_id, c.bos_token_id), (1, 2));
        assert_eq!(c.head_dim(), 4);
        Ok(())
    }

    #[test]
    fn missing_key_is_named() {
        let err = parse(r#"{"vocab_size": 40}"#).unwrap_err().to_string();
        assert!(err.contains("missing required key `hidden_size`"), "{err}");
    }

    #[test]
    fn other_activations_are_unsupported() {
        let json = TINY.replace("\"unknown\"", "\"activation_function\": \"gelu\", \"x\"");
        let err = parse(&json).unwrap_err().to_string();
        assert!(err.contains("unsupported") && err.contains("gelu"), "{err}");
    }

    #[test]
    fn heads_must_divide_hidden() {
        let json = TINY.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3");
        assert!(parse(&json).unwrap_err().to_string().contains("multiple"));
    }
}

//! The flat parameter vector: which tensor sits where.
//!
//! Every flat vector in maskscape (weights, gradients, HVP probes and results, mask
//! indices) uses PyTorch's `named_parameters()` order of `OPTForCausalLM`, with the
//! tied LM head counted once. This is the order of the reference fixtures, so flat
//! vectors can be compared with PyTorch's element by element. Note that HuggingFace
//! declares the attention projections in the order k, v, q, out.

use super::config::{OptConfig, POSITION_OFFSET};

/// What a parameter tensor is, independent of its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamRole {
    TokenEmbedding,
    PositionEmbedding,
    ProjectOut,
    ProjectIn,
    FinalLayerNormWeight,
    FinalLayerNormBias,
    /// A tensor of decoder block `layer`.
    Layer {
        layer: usize,
        tensor: LayerTensor,
    },
    /// The LM head, present only when the embeddings are not tied.
    LmHead,
}

/// The tensors of one decoder block, in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerTensor {
    KWeight,
    KBias,
    VWeight,
    VBias,
    QWeight,
    QBias,
    OutWeight,
    OutBias,
    AttnLayerNormWeight,
    AttnLayerNormBias,
    Fc1Weight,
    Fc1Bias,
    Fc2Weight,
    Fc2Bias,
    FinalLayerNormWeight,
    FinalLayerNormBias,
}

impl LayerTensor {
    /// The HuggingFace key of this tensor below `layers.{i}.`.
    pub fn key(self) -> &'static str {
        use LayerTensor::*;
        match self {
            KWeight => "self_attn.k_proj.weight",
            KBias => "self_attn.k_proj.bias",
            VWeight => "self_attn.v_proj.weight",
            VBias => "self_attn.v_proj.bias",
            QWeight => "self_attn.q_proj.weight",
            QBias => "self_attn.q_proj.bias",
            OutWeight => "self_attn.out_proj.weight",
            OutBias => "self_attn.out_proj.bias",
            AttnLayerNormWeight => "self_attn_layer_norm.weight",
            AttnLayerNormBias => "self_attn_layer_norm.bias",
            Fc1Weight => "fc1.weight",
            Fc1Bias => "fc1.bias",
            Fc2Weight => "fc2.weight",
            Fc2Bias => "fc2.bias",
            FinalLayerNormWeight => "final_layer_norm.weight",
            FinalLayerNormBias => "final_layer_norm.bias",
        }
    }

    /// Whether this is the weight matrix of a linear layer (not a bias, not a LayerNorm).
    pub fn is_linear_weight(self) -> bool {
        use LayerTensor::*;
        matches!(
            self,
            KWeight | VWeight | QWeight | OutWeight | Fc1Weight | Fc2Weight
        )
    }
}

/// One tensor's place in the flat parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    /// The canonical HuggingFace key (`model.decoder.…` or `lm_head.weight`).
    pub name: String,
    pub role: ParamRole,
    /// Row-major shape as PyTorch stores it (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// First flat index of this tensor.
    pub offset: usize,
}

impl ParamEntry {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements (never true for a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The length of the last dimension: a matrix's columns, a vector's length.
    pub fn columns(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// The flat index range this tensor occupies.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The ordered list of parameter tensors of an OPT model and their flat offsets.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    total: usize,
}

impl ParamLayout {
    /// The layout of `OPTForCausalLM` for `config`, in `named_parameters()` order.
    pub fn new(config: &OptConfig) -> Self {
        let hidden = config.hidden_size;
        let embed = config.word_embed_proj_dim;
        let ffn = config.ffn_dim;
        let mut specs: Vec<(String, ParamRole, Vec<usize>)> = Vec::new();
        let decoder = |key: &str| format!("model.decoder.{key}");
        specs.push((
            decoder("embed_tokens.weight"),
            ParamRole::TokenEmbedding,
            vec![config.vocab_size, embed],
        ));
        specs.push((
            decoder("embed_positions.weight"),
            ParamRole::PositionEmbedding,
            vec![config.max_position_embeddings + POSITION_OFFSET, hidden],
        ));
        if config.has_projections() {
            specs.push((
                decoder("project_out.weight"),
                ParamRole::ProjectOut,
                vec![embed, hidden],
            ));
            specs.push((
                decoder("project_in.weight"),
                ParamRole::ProjectIn,
                vec![hidden, embed],
            ));
        }
        if config.has_final_layer_norm() && config.layer_norm_elementwise_affine {
            specs.push((
                decoder("final_layer_norm.weight"),
                ParamRole::FinalLayerNormWeight,
                vec![hidden],
            ));
            specs.push((
                decoder("final_layer_norm.bias"),
                ParamRole::FinalLayerNormBias,
                vec![hidden],
            ));
        }
        for layer in 0..config.num_hidden_layers {
            for (tensor, shape) in layer_tensors(config, hidden, ffn) {
                specs.push((
                    decoder(&format!("layers.{layer}.{}", tensor.key())),
                    ParamRole::Layer { layer, tensor },
                    shape,
                ));
            }
        }
        if !config.tie_word_embeddings {
            specs.push((
                "lm_head.weight".to_string(),
                ParamRole::LmHead,
                vec![config.vocab_size, embed],
            ));
        }
        let mut offset = 0;
        let entries = specs
            .into_iter()
            .map(|(name, role, shape)| {
                let entry = ParamEntry {
                    name,
                    role,
                    shape,
                    offset,
                };
                offset += entry.len();
                entry
            })
            .collect();
        ParamLayout {
            entries,
            total: offset,
        }
    }

    /// The tensors in flat order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Total number of parameters N (the length of every flat vector).
    pub fn total(&self) -> usize {
        self.total
    }

    /// The entry with the given role, if the model has it.
    pub fn find(&self, role: ParamRole) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.role == role)
    }

    /// The entry named `name` (canonical key, with the `model.` prefix).
    pub fn by_name(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The entry holding flat index `index` (binary search over offsets).
    pub fn entry_of(&self, index: usize) -> Option<&ParamEntry> {
        if index >= self.total {
            return None;
        }
        let pos = self.entries.partition_point(|e| e.offset <= index);
        self.entries.get(pos.checked_sub(1)?)
    }
}

/// The tensors of one decoder block that `config` creates, with their shapes.
fn layer_tensors(config: &OptConfig, hidden: usize, ffn: usize) -> Vec<(LayerTensor, Vec<usize>)> {
    use LayerTensor::*;
    let bias = config.enable_bias;
    let affine = config.layer_norm_elementwise_affine;
    let all = [
        (KWeight, vec![hidden, hidden], true),
        (KBias, vec![hidden], bias),
        (VWeight, vec![hidden, hidden], true),
        (VBias, vec![hidden], bias),
        (QWeight, vec![hidden, hidden], true),
        (QBias, vec![hidden], bias),
        (OutWeight, vec![hidden, hidden], true),
        (OutBias, vec![hidden], bias),
        (AttnLayerNormWeight, vec![hidden], affine),
        (AttnLayerNormBias, vec![hidden], affine),
        (Fc1Weight, vec![ffn, hidden], true),
        (Fc1Bias, vec![ffn], bias),
        (Fc2Weight, vec![hidden, ffn], true),
        (Fc2Bias, vec![hidden], bias),
        (FinalLayerNormWeight, vec![hidden], affine),
        (FinalLayerNormBias, vec![hidden], affine),
    ];
    all.into_iter()
        .filter(|(_, _, present)| *present)
        .map(|(tensor, shape, _)| (tensor, shape))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    fn config(proj: usize, pre_ln: bool) -> OptConfig {
        OptConfig {
            vocab_size: 40,
            hidden_size: 8,
            ffn_dim: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            max_position_embeddings: 16,
            word_embed_proj_dim: proj,
            do_layer_norm_before: pre_ln,
            remove_final_layer_norm: false,
            enable_bias: true,
            layer_norm_elementwise_affine: true,
            pad_token_id: 1,
            bos_token_id: 2,
            eos_token_id: 2,
            tie_word_embeddings: true,
        }
    }

    #[test]
    fn tiny_fixture_layouts_have_1680_parameters() {
        // Both tiny reference fixtures (pre-LN, and post-LN with projections) hold N = 1680.
        let pre = ParamLayout::new(&config(8, true));
        let post = ParamLayout::new(&config(6, false));
        assert_eq!(pre.total(), 1680);
        assert_eq!(post.total(), 1680);
        assert_eq!(
            pre.entries()[2].name,
            "model.decoder.final_layer_norm.weight"
        );
        assert_eq!(post.entries()[2].name, "model.decoder.project_out.weight");
        assert_eq!(post.entries()[3].shape, vec![8, 6]);
        assert_eq!(
            pre.entries()[4].name,
            "model.decoder.layers.0.self_attn.k_proj.weight"
        );
    }

    #[test]
    fn entry_of_finds_the_owning_tensor() -> TestResult {
        let layout = ParamLayout::new(&config(8, true));
        for e in layout.entries() {
            assert_eq!(
                layout
                    .entry_of(e.offset)
                    .ok_or("offset outside the layout")?
                    .name,
                e.name
            );
            assert_eq!(
                layout
                    .entry_of(e.offset + e.len() - 1)
                    .ok_or("offset outside the layout")?
                    .name,
                e.name
            );
        }
        assert!(layout.entry_of(layout.total()).is_none());
        Ok(())
    }
}

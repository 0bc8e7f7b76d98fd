//! Named OPT architectures: the hub checkpoints' shapes, plus small ones for tests
//! and benchmarks.

use super::config::OptConfig;

/// The names [`preset`] knows, in order of size.
pub const PRESET_NAMES: &[&str] = &[
    "opt-mini", "opt-125m", "opt-350m", "opt-1.3b", "opt-2.7b", "opt-6.7b", "opt-13b",
];

/// The configuration of a named architecture (hub shapes for `opt-*` sizes;
/// `opt-mini` is the small benchmark model of the PyTorch reference script).
pub fn preset(name: &str) -> Option<OptConfig> {
    // (vocab, hidden, ffn, layers, heads, positions, embed dim, pre-LN)
    let (vocab, hidden, ffn, layers, heads, positions, embed, pre_ln) = match name {
        "opt-mini" => (2048, 256, 1024, 4, 4, 128, 256, true),
        "opt-125m" => (50272, 768, 3072, 12, 12, 2048, 768, true),
        "opt-350m" => (50272, 1024, 4096, 24, 16, 2048, 512, false),
        "opt-1.3b" => (50272, 2048, 8192, 24, 32, 2048, 2048, true),
        "opt-2.7b" => (50272, 2560, 10240, 32, 32, 2048, 2560, true),
        "opt-6.7b" => (50272, 4096, 16384, 32, 32, 2048, 4096, true),
        "opt-13b" => (50272, 5120, 20480, 40, 40, 2048, 5120, true),
        _ => return None,
    };
    Some(OptConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        ffn_dim: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        max_position_embeddings: positions,
        word_embed_proj_dim: embed,
        do_layer_norm_before: pre_ln,
        remove_final_layer_norm: false,
        enable_bias: true,
        layer_norm_elementwise_affine: true,
        pad_token_id: 1,
        bos_token_id: 2,
        eos_token_id: 2,
        tie_word_embeddings: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamLayout;
    use crate::testing::TestResult;

    #[test]
    fn parameter_counts_match_the_paper() -> TestResult {
        // Total parameter counts P quoted in the paper (tied LM head counted once).
        for (name, total) in [
            ("opt-125m", 125_239_296),
            ("opt-1.3b", 1_315_758_080),
            ("opt-13b", 12_853_473_280),
        ] {
            let config = preset(name).ok_or_else(|| format!("no preset {name}"))?;
            assert_eq!(ParamLayout::new(&config).total(), total, "{name}");
        }
        assert!(PRESET_NAMES.iter().all(|n| preset(n).is_some()));
        assert!(preset("opt-7b").is_none());
        Ok(())
    }
}

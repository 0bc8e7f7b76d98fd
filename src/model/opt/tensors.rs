//! Where each of OPT's tensors sits in the flat parameter vector, resolved once so
//! that the passes never look anything up.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::model::config::OptConfig;
use crate::model::layout::{LayerTensor, ParamLayout, ParamRole};
use crate::model::pass::{Lin, Norm};

/// The tensors of one decoder block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockTensors {
    pub q: Lin,
    pub k: Lin,
    pub v: Lin,
    pub out: Lin,
    /// `self_attn_layer_norm`.
    pub ln1: Norm,
    pub fc1: Lin,
    pub fc2: Lin,
    /// `final_layer_norm` of the block.
    pub ln2: Norm,
}

/// Where every tensor the network reads sits in the layout, resolved once so that
/// the sweeps never look anything up.
#[derive(Clone, Debug)]
pub(crate) struct Tensors {
    pub token: usize,
    pub position: usize,
    pub project_in: Option<Lin>,
    pub project_out: Option<Lin>,
    pub final_ln: Norm,
    /// The LM head's weight: the token embedding when tied.
    pub head: Lin,
    pub blocks: Vec<BlockTensors>,
}

impl Tensors {
    pub(crate) fn resolve(layout: &ParamLayout, config: &OptConfig) -> Result<Self> {
        let entries: HashMap<ParamRole, usize> = layout
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| (e.role, i))
            .collect();
        let find = |role: ParamRole| entries.get(&role).copied();
        let need = |role: ParamRole| {
            find(role)
                .ok_or_else(|| Error::Unsupported(format!("the parameter layout has no {role:?}")))
        };
        let lin = |w: ParamRole, b: Option<ParamRole>| -> Result<Lin> {
            Ok(Lin {
                w: need(w)?,
                b: b.and_then(find),
            })
        };
        let layer = |layer: usize, tensor: LayerTensor| ParamRole::Layer { layer, tensor };
        let blocks = (0..config.num_hidden_layers)
            .map(|l| {
                use LayerTensor::*;
                let pair = |w, b| lin(layer(l, w), Some(layer(l, b)));
                let norm = |w, b| Norm {
                    w: find(layer(l, w)),
                    b: find(layer(l, b)),
                };
                Ok(BlockTensors {
                    q: pair(QWeight, QBias)?,
                    k: pair(KWeight, KBias)?,
                    v: pair(VWeight, VBias)?,
                    out: pair(OutWeight, OutBias)?,
                    ln1: norm(AttnLayerNormWeight, AttnLayerNormBias),
                    fc1: pair(Fc1Weight, Fc1Bias)?,
                    fc2: pair(Fc2Weight, Fc2Bias)?,
                    ln2: norm(FinalLayerNormWeight, FinalLayerNormBias),
                })
            })
            .collect::<Result<_>>()?;
        let head = if config.tie_word_embeddings {
            ParamRole::TokenEmbedding
        } else {
            ParamRole::LmHead
        };
        let projections = config.has_projections();
        Ok(Tensors {
            token: need(ParamRole::TokenEmbedding)?,
            position: need(ParamRole::PositionEmbedding)?,
            project_in: projections
                .then(|| lin(ParamRole::ProjectIn, None))
                .transpose()?,
            project_out: projections
                .then(|| lin(ParamRole::ProjectOut, None))
                .transpose()?,
            final_ln: Norm {
                w: find(ParamRole::FinalLayerNormWeight),
                b: find(ParamRole::FinalLayerNormBias),
            },
            head: lin(head, None)?,
            blocks,
        })
    }
}

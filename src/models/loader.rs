//! A scoped view of a model's weights: the module path (diffusers / transformers key prefix)
//! a block loads from, extended one module at a time with [`Loader::pp`] — so a block's
//! `load` names its own tensors by their last key segments, and a missing tensor's error
//! names its full dotted path.

use super::blocks::{Conv2d, GroupNorm};
use super::{LayerNorm, Linear};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::Conv2dOptions;
use crate::tensor::Tensor;
use crate::weights::{Relayout, WeightDType, Weights};

/// Weights at a key prefix, with the device and dtype policy they upload with.
#[derive(Clone)]
pub struct Loader<'a> {
    w: &'a Weights,
    gpu: &'a Gpu,
    prefix: String,
    dt: WeightDType,
}

impl<'a> Loader<'a> {
    /// The root at `prefix` (`""`, or a checkpoint's own prefix with or without the dot).
    pub fn new(w: &'a Weights, gpu: &'a Gpu, prefix: &str, dt: WeightDType) -> Self {
        Self {
            w,
            gpu,
            prefix: prefix.trim_end_matches('.').to_string(),
            dt,
        }
    }

    /// The sub-module `name` (`"down_blocks"`, then `0`, …).
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self {
            prefix: self.key(&name.to_string()),
            ..self.clone()
        }
    }

    /// The full key of `leaf` under this prefix.
    pub fn key(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    pub fn gpu(&self) -> &'a Gpu {
        self.gpu
    }

    pub fn weights(&self) -> &'a Weights {
        self.w
    }

    pub fn dtype(&self) -> WeightDType {
        self.dt
    }

    /// Uploads `leaf` (PyTorch shape `shape`), re-laid-out, with dtype policy `dt`.
    pub fn upload(
        &self,
        leaf: &str,
        shape: &[usize],
        relayout: Relayout,
        dt: WeightDType,
    ) -> Result<Tensor> {
        self.w
            .upload(self.gpu, &self.key(leaf), shape, relayout, dt)
    }

    /// This module as a `Linear` (`weight` `[out, in]`, optional `bias`).
    pub fn linear(&self, in_f: usize, out_f: usize, bias: bool) -> Result<Linear> {
        Linear::load(self, in_f, out_f, bias)
    }

    /// This module as a `Conv2d` (k×k, with bias).
    pub fn conv(&self, cin: usize, cout: usize, k: usize, opts: Conv2dOptions) -> Result<Conv2d> {
        Conv2d::load(self, cin, cout, k, opts)
    }

    pub fn group_norm(&self, c: usize, groups: usize, eps: f32) -> Result<GroupNorm> {
        GroupNorm::load(self, c, groups, eps)
    }

    pub fn layer_norm(&self, c: usize, eps: f32) -> Result<LayerNorm> {
        LayerNorm::load(self, c, eps)
    }

    /// `weight` and `bias` of a norm layer with `c` channels, in f32 (they are tiny and the
    /// norm kernels read f32).
    pub fn affine(&self, c: usize) -> Result<(Tensor, Tensor)> {
        let up = |n: &str| self.upload(n, &[c], Relayout::None, WeightDType::F32);
        Ok((up("weight")?, up("bias")?))
    }
}

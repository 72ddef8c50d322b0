//! Which networks stay on the device: all of them (the default), or each only while its stage
//! runs ([`Offload`]), loaded again from the model's weights when needed — diffusers'
//! `enable_model_cpu_offload`, with the weights re-read from their files instead of kept in
//! host memory.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::weights::{WeightDType, Weights};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// When a request releases the networks it is not running (see [`crate::Pipeline::offload`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Offload {
    /// Every network stays on the device; a request that does not fit beside them is refused.
    Never,
    /// As `Never` while requests fit beside every network; a request that fits only with the
    /// networks it is not running released runs as `Always`.
    #[default]
    Auto,
    /// Each network is on the device only for its stage: the text encoder while the prompts are
    /// encoded, the VAE encoder while an init image is, the U-Net while sampling, the VAE
    /// decoder while decoding. The peak is the largest network plus its stage's activations,
    /// not every network's weights; each request loads the networks again (the files are read
    /// again: seconds for a full-size U-Net on a CPU, mostly its upload on a GPU).
    Always,
}

/// Loads a network (on the device, or, inside [`Gpu::simulate`], only its shapes).
pub(crate) type Loader<T> = Box<dyn Fn(&Gpu) -> Result<T> + Send + Sync>;

/// A model's `load` (weights, key prefix, config, dtype).
pub(crate) type ModelLoad<T, C> = fn(&Gpu, &Weights, &str, &C, WeightDType) -> Result<T>;

/// A network of the pipeline, on the device or released. `config` is always at hand.
pub struct Resident<T, C> {
    pub config: C,
    model: Mutex<Option<Arc<T>>>,
    load: Loader<T>,
    /// Device bytes its weights took (the pool's size classes) when it was last loaded.
    bytes: AtomicU64,
}

/// Slots that load from weights (the loader outlives the call: `'static` parts).
impl<T: 'static, C: Clone + Send + Sync + 'static> Resident<T, C> {
    /// A network of `config` loaded now from `weights` by `load` (a model's `load`), and
    /// again from them after a release.
    pub(crate) fn from_weights(
        gpu: &Gpu,
        config: &C,
        weights: Arc<Weights>,
        load: ModelLoad<T, C>,
        dtype: WeightDType,
    ) -> Result<Self> {
        Self::loading(gpu, config, weights, load, dtype, true)
    }

    /// A slot for this network's config loading from `weights` instead: loaded now when this
    /// one is loaded (so weights both use are found on the device), else when first needed.
    pub(crate) fn reload(
        &self,
        gpu: &Gpu,
        weights: Arc<Weights>,
        load: ModelLoad<T, C>,
        dtype: WeightDType,
    ) -> Result<Self> {
        let now = self.loaded().is_some();
        Self::loading(gpu, &self.config, weights, load, dtype, now)
    }

    /// A slot loading a network of `config` from `weights` by `load`; loaded at once if `now`.
    fn loading(
        gpu: &Gpu,
        config: &C,
        weights: Arc<Weights>,
        load: ModelLoad<T, C>,
        dtype: WeightDType,
        now: bool,
    ) -> Result<Self> {
        let c = config.clone();
        let loader: Loader<T> = Box::new(move |g| load(g, &weights, "", &c, dtype));
        let model = match now {
            true => Some(Self::load_measured(gpu, &loader)?),
            false => None,
        };
        Ok(Self::new(config.clone(), model, loader))
    }
}

impl<T, C> Resident<T, C> {
    /// A slot holding `model` (when already loaded, with the `bytes` its loading took) that
    /// loads it again with `load`.
    pub(crate) fn new(config: C, model: Option<(T, u64)>, load: Loader<T>) -> Self {
        let (model, bytes) = match model {
            Some((m, b)) => (Some(Arc::new(m)), b),
            None => (None, 0),
        };
        Self {
            config,
            model: Mutex::new(model),
            load,
            bytes: AtomicU64::new(bytes),
        }
    }

    /// Loads a network with `load`, returning it with the device bytes it took.
    pub(crate) fn load_measured(gpu: &Gpu, load: &Loader<T>) -> Result<(T, u64)> {
        let before = gpu.memory_stats().in_use;
        let m = load(gpu)?;
        let bytes = gpu.memory_stats().in_use.saturating_sub(before);
        Ok((m, bytes))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<T>>> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The network, loaded first if it was released. Inside [`Gpu::simulate`] a released
    /// network (or any, with `fresh`: the estimate of a run that releases everything first)
    /// is a copy with no data on the simulating pool, and the slot is left as it was.
    pub(crate) fn get(&self, gpu: &Gpu, fresh: bool) -> Result<Arc<T>> {
        let mut slot = self.slot();
        if gpu.is_simulating() {
            return match slot.as_ref() {
                Some(m) if !fresh => Ok(m.clone()),
                _ => Ok(Arc::new((self.load)(gpu)?)),
            };
        }
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let (m, bytes) = Self::load_measured(gpu, &self.load)?;
        let m = Arc::new(m);
        self.bytes.store(bytes, Ordering::Relaxed);
        *slot = Some(m.clone());
        Ok(m)
    }

    /// [`Resident::get`], adding the time it took to `loading`.
    pub(crate) fn get_timed(
        &self,
        gpu: &Gpu,
        fresh: bool,
        loading: &mut std::time::Duration,
    ) -> Result<Arc<T>> {
        let clock = std::time::Instant::now();
        let m = self.get(gpu, fresh);
        *loading += clock.elapsed();
        m
    }

    /// The network when it is on the device.
    pub fn loaded(&self) -> Option<Arc<T>> {
        self.slot().clone()
    }

    /// Device bytes the network holds now (0 when released).
    pub fn resident_bytes(&self) -> u64 {
        if self.slot().is_some() {
            self.bytes.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Drops the slot's reference: its buffers go back to the pool once no running stage
    /// holds the network. Nothing happens inside a simulation.
    pub(crate) fn release(&self, gpu: &Gpu) {
        if !gpu.is_simulating() {
            *self.slot() = None;
        }
    }
}

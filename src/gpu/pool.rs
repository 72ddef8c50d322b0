//! Buffer pool keyed by (size class, usage). Released buffers go back to a free list and are
//! handed out again; with reuse off they are destroyed at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Sizes are rounded up to a class: multiples of 1/8 of the next lower power of two (at most
/// 12.5% waste), at least 256 bytes.
pub(crate) fn size_class(size: u64) -> u64 {
    let size = size.max(256);
    let step = (1u64 << (63 - size.leading_zeros())) / 8;
    size.div_ceil(step) * step
}

#[derive(Default)]
struct Counters {
    allocated: AtomicU64,
    peak: AtomicU64,
    in_use: AtomicU64,
}

pub(crate) struct PoolInner {
    free: Mutex<HashMap<(u64, u32), Vec<wgpu::Buffer>>>,
    reuse: AtomicBool,
    counters: Counters,
    /// A simulating pool (memory estimates): every buffer it hands out is this one small
    /// placeholder; sizes, classes, reuse and counters behave exactly as in the real pool.
    placeholder: Option<wgpu::Buffer>,
}

/// Memory the engine allocated on the device, as the pool counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes of all buffers that exist now (in use or cached in the pool).
    pub allocated: u64,
    /// Highest `allocated` seen since the last reset.
    pub peak: u64,
    /// Bytes of buffers handed out and not yet released.
    pub in_use: u64,
}

pub(crate) struct BufferPool {
    inner: Arc<PoolInner>,
}

/// A buffer from the pool; returns itself to the pool when the last reference drops.
pub struct GpuBuffer {
    buffer: wgpu::Buffer,
    class: u64,
    /// The usage it was asked for (a simulating pool's placeholder has another).
    usage: u32,
    pool: Arc<PoolInner>,
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// Allocated size (the size class, at least what was asked for).
    pub fn size(&self) -> u64 {
        self.class
    }
    pub(crate) fn usage_bits(&self) -> u32 {
        self.usage
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} bytes)", self.class)
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        let c = &self.pool.counters;
        c.in_use.fetch_sub(self.class, Ordering::Relaxed);
        if self.pool.reuse.load(Ordering::Relaxed) {
            let key = (self.class, self.usage);
            let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
            free.entry(key).or_default().push(self.buffer.clone());
        } else {
            if self.pool.placeholder.is_none() {
                self.buffer.destroy();
            }
            c.allocated.fetch_sub(self.class, Ordering::Relaxed);
        }
    }
}

impl BufferPool {
    pub(crate) fn new(reuse: bool) -> Self {
        Self::with_placeholder(reuse, None)
    }

    /// A pool that allocates nothing: it hands out `placeholder` under each requested size
    /// and counts what a real pool would hold (see `Gpu::simulate`).
    pub(crate) fn simulating(reuse: bool, placeholder: wgpu::Buffer) -> Self {
        Self::with_placeholder(reuse, Some(placeholder))
    }

    fn with_placeholder(reuse: bool, placeholder: Option<wgpu::Buffer>) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                free: Mutex::new(HashMap::new()),
                reuse: AtomicBool::new(reuse),
                counters: Counters::default(),
                placeholder,
            }),
        }
    }

    pub(crate) fn reuse(&self) -> bool {
        self.inner.reuse.load(Ordering::Relaxed)
    }

    pub(crate) fn set_reuse(&self, on: bool) {
        self.inner.reuse.store(on, Ordering::Relaxed);
        if !on {
            self.trim();
        }
    }

    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        size: u64,
        usage: wgpu::BufferUsages,
        label: &str,
    ) -> Arc<GpuBuffer> {
        let class = size_class(size);
        let c = &self.inner.counters;
        let cached = if self.inner.reuse.load(Ordering::Relaxed) {
            let mut free = self.inner.free.lock().unwrap_or_else(|p| p.into_inner());
            free.get_mut(&(class, usage.bits())).and_then(Vec::pop)
        } else {
            None
        };
        let buffer = cached.unwrap_or_else(|| {
            let now = c.allocated.fetch_add(class, Ordering::Relaxed) + class;
            c.peak.fetch_max(now, Ordering::Relaxed);
            if let Some(p) = &self.inner.placeholder {
                return p.clone();
            }
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: class,
                usage,
                mapped_at_creation: false,
            })
        });
        c.in_use.fetch_add(class, Ordering::Relaxed);
        Arc::new(GpuBuffer {
            buffer,
            class,
            usage: usage.bits(),
            pool: self.inner.clone(),
        })
    }

    pub(crate) fn trim(&self) {
        let mut free = self.inner.free.lock().unwrap_or_else(|p| p.into_inner());
        for ((class, _), bufs) in free.drain() {
            for b in bufs {
                if self.inner.placeholder.is_none() {
                    b.destroy();
                }
                self.inner
                    .counters
                    .allocated
                    .fetch_sub(class, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        let c = &self.inner.counters;
        MemoryStats {
            allocated: c.allocated.load(Ordering::Relaxed),
            peak: c.peak.load(Ordering::Relaxed),
            in_use: c.in_use.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset_peak(&self) {
        let c = &self.inner.counters;
        c.peak
            .store(c.allocated.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_little_waste() {
        for s in [
            1u64,
            255,
            256,
            257,
            1000,
            4096,
            4097,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let c = size_class(s);
            assert!(c >= s, "{s} -> {c}");
            assert!(c >= 256);
            if s > 256 {
                assert!((c - s) as f64 <= s as f64 * 0.125, "{s} -> {c}");
            }
        }
        assert_eq!(size_class(4096), 4096);
    }
}

//! Copies from device buffers back to the host: blocking ([`Gpu::read_bytes`]) or started
//! now and collected later without stalling the queue ([`Gpu::read_bytes_async`]).

use super::Gpu;
use crate::error::{Error, Result};

impl Gpu {
    /// Copies `size` bytes at `offset` of `buffer` back to the host.
    pub fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        if self.is_simulating() {
            return Ok(vec![0; size as usize]);
        }
        let padded = size.div_ceil(wgpu::COPY_BUFFER_ALIGNMENT) * wgpu::COPY_BUFFER_ALIGNMENT;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: padded.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        if padded > 0 {
            enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
        }
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        let err = |e: &dyn std::fmt::Display| Error::Readback {
            tensor: what.to_string(),
            what: e.to_string(),
        };
        rx.recv().map_err(|e| err(&e))?.map_err(|e| err(&e))?;
        let view = staging.get_mapped_range(..).map_err(|e| err(&e))?;
        let out = view[..size as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// A readback under way ([`Gpu::read_bytes_async`]): the copy is submitted and the map
/// requested; the data arrive whenever the device next completes work, with no wait here.
pub struct AsyncRead {
    staging: Option<wgpu::Buffer>,
    size: usize,
    done: std::sync::Arc<std::sync::Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>,
    what: String,
}

impl AsyncRead {
    /// The bytes if the map has completed (polls the device without blocking), else `None`.
    pub fn try_take(&mut self, gpu: &Gpu) -> Result<Option<Vec<u8>>> {
        let Some(staging) = &self.staging else {
            // A simulation reads zeros at once.
            return Ok(Some(vec![0; self.size]));
        };
        let _ = gpu.device.poll(wgpu::PollType::Poll);
        let state = self.done.lock().map_err(|e| Error::Readback {
            tensor: self.what.clone(),
            what: e.to_string(),
        })?;
        let err = |e: &dyn std::fmt::Display| Error::Readback {
            tensor: self.what.clone(),
            what: e.to_string(),
        };
        match &*state {
            None => Ok(None),
            Some(Err(e)) => Err(err(e)),
            Some(Ok(())) => {
                let view = staging.get_mapped_range(..).map_err(|e| err(&e))?;
                let out = view[..self.size].to_vec();
                drop(view);
                staging.unmap();
                Ok(Some(out))
            }
        }
    }

    /// The bytes, waiting for the device if they have not arrived. When another thread polls
    /// the same device, the map's callback can run on that thread a moment after our own poll
    /// returns: so wait until it has run (bounded), not just until the device is idle.
    pub fn wait(&mut self, gpu: &Gpu) -> Result<Vec<u8>> {
        let start = std::time::Instant::now();
        loop {
            if let Some(b) = self.try_take(gpu)? {
                return Ok(b);
            }
            if start.elapsed() > std::time::Duration::from_secs(60) {
                return Err(Error::Readback {
                    tensor: self.what.clone(),
                    what: "the map did not complete within 60 s of the device going idle".into(),
                });
            }
            gpu.wait()?;
            std::thread::yield_now();
        }
    }
}

impl Gpu {
    /// Starts copying `size` bytes at `offset` of `buffer` back to the host and returns at
    /// once: the copy runs after the work submitted so far, and [`AsyncRead::try_take`]
    /// delivers it without stalling the queue.
    pub fn read_bytes_async(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
        what: &str,
    ) -> AsyncRead {
        let done = std::sync::Arc::new(std::sync::Mutex::new(None));
        if self.is_simulating() {
            return AsyncRead {
                staging: None,
                size: size as usize,
                done,
                what: what.into(),
            };
        }
        let padded = (size.div_ceil(wgpu::COPY_BUFFER_ALIGNMENT) * wgpu::COPY_BUFFER_ALIGNMENT)
            .max(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(what) });
        enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
        self.queue.submit([enc.finish()]);
        let slot = done.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            if let Ok(mut s) = slot.lock() {
                *s = Some(r);
            }
        });
        AsyncRead {
            staging: Some(staging),
            size: size as usize,
            done,
            what: what.into(),
        }
    }
}

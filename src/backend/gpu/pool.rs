//! Device memory: size-classed buffers that return to their device's pool
//! when dropped, uploads and downloads.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::device::{gl_turn, Context};
use super::lock;
use crate::backend::Storage;
use crate::{DType, Error, Result};

/// Size class of an allocation: at most 1/8 larger than asked, so pooled
/// buffers fit many nearby sizes without wasting much.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    let top = 64 - (bytes - 1).leading_zeros();
    let step = (1u64 << top.saturating_sub(3)).max(16);
    bytes.div_ceil(step) * step
}

/// Bytes of `len` elements of 4 bytes, or an error naming the op.
pub(crate) fn bytes_of(op: &'static str, len: usize) -> Result<u64> {
    (len as u64).checked_mul(4).ok_or_else(|| {
        Error::OutOfMemory(format!("{op}: {len} elements do not fit any device buffer"))
    })
}

/// Who else may hold a buffer, which decides where it goes when dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Owner {
    /// Ours alone: back to the pool when dropped, reused by later work.
    Pool,
    /// The embedding application's (`embed::wrap_buffer`): never reused,
    /// never counted against the memory limit, left to the app when dropped.
    App,
    /// Ours, but handed to the application (`embed::share_buffer`), which
    /// may hold a clone of it for as long as it likes: never reused, and
    /// released (not pooled) when dropped, so it cannot change under the app.
    Shared,
}

/// A device buffer holding `len` elements of `dtype`. Returns to its
/// device's pool when dropped (unless the application holds it too).
pub struct GpuBuffer {
    pub(crate) ctx: Arc<Context>,
    buffer: Option<wgpu::Buffer>,
    pub(crate) len: usize,
    pub(crate) dtype: DType,
    /// An `Owner` (read on every drop and reuse check, so an atomic).
    owner: std::sync::atomic::AtomicU8,
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuBuffer({} x {} on {})",
            self.len, self.dtype, self.ctx.name
        )
    }
}

impl GpuBuffer {
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until drop")
    }

    /// An application's buffer, seen as `len` elements of `dtype`.
    pub(crate) fn app(ctx: Arc<Context>, buffer: wgpu::Buffer, len: usize, dtype: DType) -> Self {
        GpuBuffer {
            ctx,
            buffer: Some(buffer),
            len,
            dtype,
            owner: std::sync::atomic::AtomicU8::new(Owner::App as u8),
        }
    }

    pub(crate) fn owner(&self) -> Owner {
        match self.owner.load(Ordering::Relaxed) {
            x if x == Owner::App as u8 => Owner::App,
            x if x == Owner::Shared as u8 => Owner::Shared,
            _ => Owner::Pool,
        }
    }

    /// Hand the buffer to the application as well: from now on it is
    /// never reused for other data (see [`Owner::Shared`]).
    pub(crate) fn share(&self) {
        // A cached bind group would keep it alive after the app lets go.
        lock(&self.ctx.bind_groups).clear();
        // An app's own buffer stays the app's.
        let _ = self.owner.compare_exchange(
            Owner::Pool as u8,
            Owner::Shared as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        let Some(b) = self.buffer.take() else { return };
        match self.owner() {
            Owner::Pool => {
                let now = self.ctx.submits.load(Ordering::Relaxed);
                lock(&self.ctx.pool)
                    .entry(b.size())
                    .or_default()
                    .push((b, now));
            }
            Owner::App => {}
            // wgpu frees it once the application's clones are gone too.
            Owner::Shared => {
                self.ctx.allocated.fetch_sub(b.size(), Ordering::Relaxed);
            }
        }
    }
}

const BUFFER_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Context {
    /// Could a kernel bind `len` elements?
    pub(crate) fn check_elements(&self, op: &'static str, len: usize) -> Result<()> {
        self.check_binding(op, size_class(bytes_of(op, len)?))
    }

    /// Is this the largest buffer a kernel may bind?
    fn check_binding(&self, op: &'static str, bytes: u64) -> Result<()> {
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::OutOfMemory(format!(
                "{op}: a {bytes}-byte tensor exceeds the largest storage binding of {} ({limit} bytes, {}); use a smaller batch or split the tensor",
                self.name, self.info.name
            )));
        }
        Ok(())
    }

    /// Drop every free buffer the pool holds (after an out-of-memory error,
    /// or to make room under the memory limit).
    pub(crate) fn release_pool(&self) {
        self.forget_bind_groups();
        lock(&self.staging).clear();
        lock(&self.uniform_buffers).clear();
        let freed: u64 = lock(&self.pool)
            .drain()
            .map(|(_, v)| v.iter().map(|(b, _)| b.size()).sum::<u64>())
            .sum();
        self.allocated.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Count one submitted recording; every `TRIM_EVERY` of them, release
    /// the free buffers no recording has taken for `TRIM_AFTER`. Buffers
    /// a run still uses come back every step and stay; what it has moved
    /// past (an evaluation's batches, a larger model's activations) goes.
    pub(crate) fn tick_and_trim(&self) {
        /// Submits between trims.
        const TRIM_EVERY: u64 = 64;
        /// Submits a free buffer may wait in the pool.
        const TRIM_AFTER: u64 = 256;
        let now = self.submits.fetch_add(1, Ordering::Relaxed) + 1;
        if !now.is_multiple_of(TRIM_EVERY) {
            return;
        }
        let mut freed = 0;
        lock(&self.pool).retain(|_, free| {
            free.retain(|(b, since)| {
                let keep = since + TRIM_AFTER > now;
                if !keep {
                    freed += b.size();
                }
                keep
            });
            !free.is_empty()
        });
        if freed > 0 {
            self.forget_bind_groups();
        }
        self.allocated.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Drop the cached bind groups, which hold the buffers they bind: a
    /// buffer the pool releases is freed only once no group holds it.
    fn forget_bind_groups(&self) {
        lock(&self.bind_groups).clear();
    }

    /// Free buffers of `class` bytes in the pool.
    #[cfg(test)]
    pub(crate) fn pooled(&self, class: u64) -> usize {
        lock(&self.pool).get(&class).map_or(0, Vec::len)
    }

    /// Count `class` new bytes against the memory limit, releasing the
    /// pool's free buffers first when they are in the way.
    fn reserve(&self, op: &'static str, class: u64) -> Result<()> {
        let limit = self.memory_limit.load(Ordering::Relaxed);
        let fits = |ctx: &Self| {
            ctx.allocated
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                    a.checked_add(class).filter(|&n| n <= limit)
                })
                .is_ok()
        };
        if fits(self) {
            return Ok(());
        }
        self.release_pool();
        if fits(self) {
            return Ok(());
        }
        Err(Error::OutOfMemory(format!(
            "{op}: {class} more bytes on {} would pass its memory limit of {limit} bytes \
             ({} in use; SHADERGRAD_GPU_MEMORY_LIMIT or Device::set_memory_limit); the pool was \
             released, so smaller work (a smaller batch) can continue",
            self.name,
            self.allocated.load(Ordering::Relaxed)
        )))
    }

    /// A buffer of at least `bytes`, from the pool when one is free.
    fn alloc_raw(&self, op: &'static str, bytes: u64) -> Result<wgpu::Buffer> {
        let class = size_class(bytes);
        self.check_binding(op, class)?;
        // The free buffer that sorts first (by wgpu's handle order), not
        // the last one returned: which buffers a step frees, and so which
        // it gets, is then the same step after step whatever order they
        // were dropped in, and the step's bind groups are found cached.
        if let Some(free) = lock(&self.pool).get_mut(&class) {
            if let Some(first) = (0..free.len()).min_by(|&a, &b| free[a].0.cmp(&free[b].0)) {
                return Ok(free.swap_remove(first).0);
            }
        }
        self.reserve(op, class)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(op),
            size: class,
            usage: BUFFER_USAGE,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.allocated.fetch_sub(class, Ordering::Relaxed);
            // Free what the pool holds, so smaller work can go on.
            self.release_pool();
            return Err(Error::OutOfMemory(format!(
                "{op}: allocating {bytes} bytes on {} failed ({e}); the pool was released, so \
                 smaller work (a smaller batch) can continue",
                self.name
            )));
        }
        Ok(b)
    }

    pub(crate) fn alloc(
        self: &Arc<Self>,
        op: &'static str,
        len: usize,
        dtype: DType,
    ) -> Result<GpuBuffer> {
        let buffer = self.alloc_raw(op, bytes_of(op, len)?)?;
        Ok(GpuBuffer {
            ctx: self.clone(),
            buffer: Some(buffer),
            len,
            dtype,
            owner: std::sync::atomic::AtomicU8::new(Owner::Pool as u8),
        })
    }

    /// Copy host data into a new device buffer (mapped at creation, so it
    /// is ordered before any command that reads it).
    pub(crate) fn upload(self: &Arc<Self>, storage: &Storage) -> Result<GpuBuffer> {
        let (bytes, dtype): (&[u8], DType) = match storage {
            Storage::F32(v) => (bytemuck::cast_slice(v), DType::F32),
            Storage::I32(v) => (bytemuck::cast_slice(v), DType::I32),
            Storage::Gpu(_) => {
                return Err(Error::param(
                    "upload",
                    "internal: the value is already on a device",
                ))
            }
        };
        let class = size_class(bytes.len() as u64);
        self.check_binding("upload", class)?;
        // A free buffer of the class takes the data through the queue,
        // which writes it before the next submit's commands and after all
        // earlier ones: a run's recurring uploads (every batch) reuse one
        // buffer instead of each adding a new one to the pool.
        let pooled = lock(&self.pool).get_mut(&class).and_then(|v| v.pop());
        if let Some((buffer, _)) = pooled {
            if !bytes.is_empty() {
                self.queue.write_buffer(&buffer, 0, bytes);
            }
            return Ok(GpuBuffer {
                ctx: self.clone(),
                buffer: Some(buffer),
                len: storage.len(),
                dtype,
                owner: std::sync::atomic::AtomicU8::new(Owner::Pool as u8),
            });
        }
        self.reserve("upload", class)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("upload"),
            size: class,
            usage: BUFFER_USAGE,
            mapped_at_creation: true,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.allocated.fetch_sub(class, Ordering::Relaxed);
            self.release_pool();
            return Err(Error::OutOfMemory(format!(
                "upload: {} bytes to {} failed ({e})",
                bytes.len(),
                self.name
            )));
        }
        // An empty tensor still gets a (minimum-size) buffer to bind.
        if !bytes.is_empty() {
            let mut view = buffer
                .get_mapped_range_mut(..bytes.len() as u64)
                .map_err(|e| self.lost_or(Error::Device(format!("upload: mapping failed: {e}"))))?;
            view.slice(..).copy_from_slice(bytes);
        }
        buffer.unmap();
        Ok(GpuBuffer {
            ctx: self.clone(),
            buffer: Some(buffer),
            len: storage.len(),
            dtype,
            owner: std::sync::atomic::AtomicU8::new(Owner::Pool as u8),
        })
    }

    /// One element of each buffer (at the given element offsets), read
    /// back in one copy: one submit and one wait for them all, as a
    /// training step's loss and metrics should be. Returns the raw words.
    pub(crate) fn download_elements(&self, at: &[(&GpuBuffer, usize)]) -> Result<Vec<u32>> {
        let _turn = gl_turn(self.info.backend);
        self.check_alive()?;
        if at.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = 4 * at.len() as u64;
        let staging = self.staging_buffer(bytes);
        let mut enc = self.device.create_command_encoder(&Default::default());
        for (i, (b, offset)) in at.iter().enumerate() {
            if *offset >= b.len || !b.raw().usage().contains(wgpu::BufferUsages::COPY_SRC) {
                return Err(Error::param(
                    "download",
                    format!(
                        "internal: element {offset} of a {}-element buffer (usage {:?})",
                        b.len,
                        b.raw().usage()
                    ),
                ));
            }
            enc.copy_buffer_to_buffer(b.raw(), 4 * *offset as u64, &staging, 4 * i as u64, 4);
        }
        self.read_back(enc, (staging, bytes), |bytes| {
            bytemuck::cast_slice::<u8, u32>(bytes)[..at.len()].to_vec()
        })
    }

    /// A read-back buffer of at least `bytes` (a power of two from 256),
    /// from those earlier downloads left or new.
    fn staging_buffer(&self, bytes: u64) -> wgpu::Buffer {
        let size = bytes.next_power_of_two().max(256);
        let mut free = lock(&self.staging);
        if let Some(i) = free.iter().position(|b| b.size() == size) {
            return free.swap_remove(i);
        }
        drop(free);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Keep a read-back buffer for the next download of its size: a few of
    /// them, up to 16 MiB each (a step's loss or a batch's logits, not a
    /// whole model read once).
    fn return_staging(&self, buffer: wgpu::Buffer) {
        const KEPT: usize = 8;
        const LARGEST: u64 = 16 << 20;
        let mut free = lock(&self.staging);
        if free.len() < KEPT && buffer.size() <= LARGEST {
            free.push(buffer);
        }
    }

    /// Read a buffer back (waits for all submitted work).
    pub(crate) fn download(&self, b: &GpuBuffer) -> Result<Storage> {
        let _turn = gl_turn(self.info.backend);
        self.check_alive()?;
        let bytes = bytes_of("download", b.len)?;
        if bytes == 0 {
            return Ok(match b.dtype {
                DType::F32 => Storage::F32(vec![]),
                DType::I32 => Storage::I32(vec![]),
            });
        }
        if !b.raw().usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::param(
                "download",
                format!(
                    "the application's buffer ({} bytes, usage {:?}) lacks COPY_SRC, so it cannot \
                     be read back; create it with BufferUsages::COPY_SRC, or read a tensor \
                     computed from it",
                    b.raw().size(),
                    b.raw().usage()
                ),
            ));
        }
        let staging = self.staging_buffer(bytes);
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(b.raw(), 0, &staging, 0, bytes);
        self.read_back(enc, (staging, bytes), |bytes| match b.dtype {
            DType::F32 => Storage::F32(bytemuck::cast_slice(bytes).to_vec()),
            DType::I32 => Storage::I32(bytemuck::cast_slice(bytes).to_vec()),
        })
    }

    /// Submit `enc` (which copies `bytes` into `staging`), wait for the
    /// device, and read those bytes of the mapped staging buffer with `read`.
    fn read_back<T>(
        &self,
        enc: wgpu::CommandEncoder,
        (staging, bytes): (wgpu::Buffer, u64),
        read: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| {
                self.lost_or(Error::Device("download: the map callback never ran".into()))
            })?
            .map_err(|e| self.lost_or(Error::Device(format!("download: mapping failed: {e}"))))?;
        let out = {
            let view = staging
                .get_mapped_range(..bytes)
                .map_err(|e| self.lost_or(Error::Device(format!("download: {e}"))))?;
            read(&view)
        };
        staging.unmap();
        self.return_staging(staging);
        Ok(out)
    }
}

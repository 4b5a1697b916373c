//! A `Recorder` holds one realize's GPU work: every dispatch goes into one
//! command encoder, submitted once at the end.
//!
//! A buffer the recorder has bound stays with it until the submit, and is
//! reused inside the same encoder as soon as the scheduler drops its last
//! use (commands run in order), so reuse follows liveness without racing
//! other threads' encoders; after the submit, buffers return to the pool.

use std::sync::Arc;

use super::device::{gl_turn, Context, GlTurnGuard};
use super::pipeline::{KernelParams, Pipeline};
use super::pool::size_class;
use super::{lock, to_host};
use crate::backend::{Storage, Value};
use crate::shape::Layout;
use crate::{DType, Error, Result};

/// Bytes of each parameter buffer of a recording (many dispatches' slots).
const UNIFORM_BUFFER_BYTES: u64 = 64 << 10;
/// Workgroups per dispatch dimension (WebGPU's default limit).
pub(crate) const MAX_GROUPS: u32 = 65_535;

/// What a bind group binds: its layout, the parameter slot, and the
/// storage buffer at each binding.
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct BindKey {
    layout: wgpu::BindGroupLayout,
    uniform: wgpu::Buffer,
    offset: u64,
    size: u64,
    buffers: Vec<(u32, wgpu::Buffer)>,
}

/// One binding of a dispatch.
pub(crate) enum Bind<'a> {
    Read(&'a Value),
    /// An output from `Recorder::output`.
    Write(&'a Value),
    /// A binding this entry point does not use.
    Skip,
}

/// Records one realize's dispatches into a single command encoder.
pub(crate) struct Recorder {
    pub(crate) ctx: Arc<Context>,
    encoder: Option<wgpu::CommandEncoder>,
    /// The compute pass every dispatch goes into, open until a command
    /// outside passes (a clear, a copy) or the submit: one pass per
    /// recording rather than one per dispatch. It locks the encoder while
    /// open, which `end_pass` releases.
    pass: Option<wgpu::ComputePass<'static>>,
    /// Timestamps around each compute pass (`shadergrad bench`).
    #[cfg(feature = "bench")]
    timestamps: Option<PassTimestamps>,
    /// Storage this encoder binds, held until submit (see the module doc);
    /// an entry nobody else holds is free for later dispatches of this encoder.
    held: Vec<Arc<Storage>>,
    dispatches: usize,
    /// Bind groups this recording had to create (not found cached).
    bind_groups_created: usize,
    /// Parameter buffers of this recording, each with the bytes it gets
    /// at the submit (see `uniform_slot`).
    uniforms: Vec<(wgpu::Buffer, Vec<u8>)>,
    error_scopes: Option<(wgpu::ErrorScopeGuard, wgpu::ErrorScopeGuard)>,
    /// A word kernels set when they meet an out-of-range index.
    pub(crate) index_flag: Option<Value>,
    /// Adam updates waiting to share one dispatch (kernels/optim.rs).
    pub(crate) pending_adam: Option<super::kernels::optim::PendingAdam>,
    /// Dropped last: the GL turn outlives everything recorded.
    _turn: Option<GlTurnGuard>,
}

impl Recorder {
    pub(crate) fn new(ctx: Arc<Context>) -> Result<Recorder> {
        let turn = gl_turn(ctx.info.backend);
        ctx.check_alive()?;
        let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("realize"),
            });
        Ok(Recorder {
            ctx,
            encoder: Some(encoder),
            pass: None,
            #[cfg(feature = "bench")]
            timestamps: None,
            held: Vec::new(),
            dispatches: 0,
            bind_groups_created: 0,
            uniforms: Vec::new(),
            error_scopes: Some((oom, validation)),
            index_flag: None,
            pending_adam: None,
            _turn: turn,
        })
    }

    pub(crate) fn dispatches(&self) -> usize {
        self.dispatches
    }

    #[cfg(test)]
    pub(crate) fn bind_groups_created(&self) -> usize {
        self.bind_groups_created
    }

    /// An output buffer: one this encoder no longer needs, else from the pool.
    pub(crate) fn output(&mut self, op: &'static str, len: usize, dtype: DType) -> Result<Value> {
        let class = size_class(super::pool::bytes_of(op, len)?);
        if let Some(pos) = self.held.iter().position(|s| {
            Arc::strong_count(s) == 1
                && matches!(s.as_ref(), Storage::Gpu(b)
                    if b.raw().size() == class && b.owner() == super::pool::Owner::Pool)
        }) {
            let old = self.held.swap_remove(pos);
            if let Ok(Storage::Gpu(mut b)) = Arc::try_unwrap(old) {
                b.len = len;
                b.dtype = dtype;
                let storage = Arc::new(Storage::Gpu(b));
                self.held.push(storage.clone());
                return Ok(Value {
                    storage,
                    layout: Layout::contiguous(&[len]),
                });
            }
        }
        let b = self.ctx.alloc(op, len, dtype)?;
        let storage = Arc::new(Storage::Gpu(b));
        // Written by this encoder: it must not reach the shared pool before submit.
        self.held.push(storage.clone());
        Ok(Value {
            storage,
            layout: Layout::contiguous(&[len]),
        })
    }

    /// A constant of `shape` on the device: a cached element seen through
    /// stride 0.
    pub(crate) fn constant(&mut self, v: f32, dtype: DType, shape: &[usize]) -> Result<Value> {
        /// Distinct constants kept (a decaying learning rate makes new ones each step).
        const MAX_CONSTANTS: usize = 4096;
        let key = (v.to_bits(), dtype);
        let cached = lock(&self.ctx.constants).get(&key).cloned();
        let one = match cached {
            Some(c) => c,
            None => {
                let c = self.on_device(&Value::constant(v, dtype, &[1]))?;
                let mut table = lock(&self.ctx.constants);
                if table.len() >= MAX_CONSTANTS {
                    table.clear();
                }
                table.insert(key, c.clone());
                c
            }
        };
        let mut view = Value::constant(v, dtype, shape);
        view.storage = one.storage;
        Ok(view)
    }

    /// This value on the device: uploaded when it lives on the host.
    pub(crate) fn on_device(&mut self, v: &Value) -> Result<Value> {
        if let Storage::Gpu(b) = v.storage.as_ref() {
            if Arc::ptr_eq(&b.ctx, &self.ctx) {
                return Ok(v.clone());
            }
            // Another device's value goes through the host.
            let host = b.ctx.download(b)?;
            let up = self.ctx.upload(&host)?;
            return Ok(Value {
                storage: Arc::new(Storage::Gpu(up)),
                layout: v.layout.clone(),
            });
        }
        super::on_device(&self.ctx, v)
    }

    /// A slot holding one dispatch's parameters: (index into `uniforms`,
    /// offset). Slots are gathered on the host and written with one
    /// `write_buffer` per buffer before the submit (`flush_uniforms`), into
    /// buffers the context keeps between recordings: a dispatch costs no
    /// buffer of its own, a recording none in the common case. A queue
    /// write lands after every earlier submit, so a buffer goes back to the
    /// context as soon as its recording is submitted.
    fn uniform_slot(&mut self, bytes: &[u8]) -> Result<(usize, u64)> {
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment as u64;
        let slot = (bytes.len() as u64).next_multiple_of(align.max(16));
        let full = self
            .uniforms
            .last()
            .is_none_or(|(_, used)| used.len() as u64 + slot > UNIFORM_BUFFER_BYTES);
        if full {
            let buffer = lock(&self.ctx.uniform_buffers).pop().unwrap_or_else(|| {
                self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: UNIFORM_BUFFER_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            });
            self.uniforms.push((buffer, Vec::with_capacity(4096)));
        }
        let index = self.uniforms.len() - 1;
        let host = &mut self.uniforms[index].1;
        let offset = host.len() as u64;
        host.extend_from_slice(bytes);
        host.resize((offset + slot) as usize, 0);
        Ok((index, offset))
    }

    /// Write the parameter bytes into their buffers (before the submit).
    fn flush_uniforms(&mut self) {
        for (buffer, bytes) in &self.uniforms {
            if !bytes.is_empty() {
                self.ctx.queue.write_buffer(buffer, 0, bytes);
            }
        }
    }

    /// Hand the parameter buffers back to the context (after the submit).
    fn return_uniforms(&mut self) {
        let mut free = lock(&self.ctx.uniform_buffers);
        free.extend(self.uniforms.drain(..).map(|(b, _)| b));
    }

    /// Record one dispatch of `pipeline` with `params` at binding 0 and
    /// `binds` at bindings 1.., over `groups` workgroups.
    pub(crate) fn dispatch<P: KernelParams>(
        &mut self,
        pipeline: &Pipeline,
        params: &P,
        binds: &[Bind<'_>],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        // Updates still waiting go first when this dispatch reads their results.
        if let Some(pending) = &self.pending_adam {
            let reads_pending = binds.iter().any(|b| match b {
                Bind::Read(v) | Bind::Write(v) => pending.produces(v),
                Bind::Skip => false,
            });
            if reads_pending {
                super::kernels::optim::flush_adam(self)?;
            }
        }
        let bytes = bytemuck::bytes_of(params);
        let (uniform, offset) = self.uniform_slot(bytes)?;
        let group = self.bind_group(pipeline, uniform, offset, bytes.len() as u64, binds)?;
        // Outputs are already held (`output`); inputs are held from here on.
        for b in binds {
            if let Bind::Read(v) = b {
                if !self.held.iter().any(|h| Arc::ptr_eq(h, &v.storage)) {
                    self.held.push(v.storage.clone());
                }
            }
        }
        let pass = match &mut self.pass {
            Some(pass) => pass,
            None => {
                let encoder = self.encoder.as_mut().expect("present until submit");
                #[cfg(feature = "bench")]
                let timestamp_writes = self.timestamps.as_mut().and_then(PassTimestamps::next);
                #[cfg(not(feature = "bench"))]
                let timestamp_writes = None;
                let pass = encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes,
                    })
                    .forget_lifetime();
                self.pass.insert(pass)
            }
        };
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        self.dispatches += 1;
        Ok(())
    }

    /// The bind group of one dispatch: cached by what it binds, since a
    /// training step binds the same pooled buffers at the same parameter
    /// slots step after step and creating a group is a good part of a
    /// dispatch's host cost. Only groups over our own pooled buffers are
    /// kept (a cached group holds its buffers alive), and the cache is
    /// emptied whenever the pool releases buffers (`forget_bind_groups`),
    /// so it never keeps freed memory, nor an application's buffer.
    fn bind_group(
        &mut self,
        pipeline: &Pipeline,
        uniform: usize,
        offset: u64,
        size: u64,
        binds: &[Bind<'_>],
    ) -> Result<wgpu::BindGroup> {
        /// Groups kept at most (a step's dispatches, many times over).
        const MAX_BIND_GROUPS: usize = 4096;
        let uniform_buffer = &self.uniforms[uniform].0;
        let mut buffers = Vec::with_capacity(binds.len());
        let mut cacheable = true;
        for (i, b) in binds.iter().enumerate() {
            let (Bind::Read(v) | Bind::Write(v)) = b else {
                continue;
            };
            let Storage::Gpu(buf) = v.storage.as_ref() else {
                return Err(Error::param("dispatch", "internal: a host value was bound"));
            };
            cacheable &= buf.owner() == super::pool::Owner::Pool;
            buffers.push((1 + i as u32, buf.raw().clone()));
        }
        let key = BindKey {
            layout: pipeline.layout.clone(),
            uniform: uniform_buffer.clone(),
            offset,
            size,
            buffers,
        };
        if cacheable {
            if let Some(group) = lock(&self.ctx.bind_groups).get(&key) {
                return Ok(group.clone());
            }
        }
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniform_buffer,
                offset,
                size: std::num::NonZeroU64::new(size),
            }),
        }];
        entries.extend(
            key.buffers
                .iter()
                .map(|(binding, buffer)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: buffer.as_entire_binding(),
                }),
        );
        let group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.layout,
                entries: &entries,
            });
        self.bind_groups_created += 1;
        if cacheable {
            let mut cache = lock(&self.ctx.bind_groups);
            if cache.len() >= MAX_BIND_GROUPS {
                cache.clear();
            }
            cache.insert(key, group.clone());
        }
        Ok(group)
    }

    /// Close the open compute pass, unlocking the encoder.
    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// Zero a buffer (recorded in order with the dispatches).
    pub(crate) fn clear(&mut self, v: &Value) {
        if let Storage::Gpu(b) = v.storage.as_ref() {
            self.end_pass();
            let encoder = self.encoder.as_mut().expect("present until submit");
            encoder.clear_buffer(b.raw(), 0, None);
        }
    }

    /// Copy all of `src` into `dst` (same byte size), in order with the
    /// dispatches: the copy-bandwidth probe of `shadergrad bench`.
    #[cfg(feature = "bench")]
    pub(crate) fn copy_whole(&mut self, src: &Value, dst: &Value) -> Result<()> {
        let (Storage::Gpu(s), Storage::Gpu(d)) = (src.storage.as_ref(), dst.storage.as_ref())
        else {
            return Err(Error::param("copy", "internal: a host value was copied"));
        };
        let bytes = s.raw().size().min(d.raw().size());
        if !self.held.iter().any(|h| Arc::ptr_eq(h, &src.storage)) {
            self.held.push(src.storage.clone());
        }
        self.end_pass();
        let encoder = self.encoder.as_mut().expect("present until submit");
        encoder.copy_buffer_to_buffer(s.raw(), 0, d.raw(), 0, bytes);
        Ok(())
    }

    /// Time this recording's compute passes with timestamp queries, where
    /// the device has them (`submit_timed` reads the time).
    #[cfg(feature = "bench")]
    pub(crate) fn time_passes(&mut self) -> bool {
        self.timestamps = PassTimestamps::new(&self.ctx);
        self.timestamps.is_some()
    }

    /// Submit, wait, and return the device seconds inside the compute
    /// passes (None without timestamps, or with more passes than slots).
    #[cfg(feature = "bench")]
    pub(crate) fn submit_timed(mut self) -> Result<Option<f64>> {
        super::kernels::optim::flush_adam(&mut self)?;
        self.end_pass();
        let Some(t) = self.timestamps.take() else {
            self.submit()?;
            return Ok(None);
        };
        let encoder = self.encoder.as_mut().expect("present until submit");
        let used = t.used.min(t.capacity);
        if used > 0 {
            encoder.resolve_query_set(&t.set, 0..2 * used, &t.resolve, 0);
            encoder.copy_buffer_to_buffer(&t.resolve, 0, &t.read, 0, 16 * used as u64);
        }
        let ctx = self.ctx.clone();
        self.submit()?;
        if used == 0 || t.used > t.capacity {
            return Ok(None);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        t.read.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        ctx.wait()?;
        rx.recv()
            .map_err(|_| Error::Device("timestamps: the map callback never ran".into()))?
            .map_err(|e| Error::Device(format!("timestamps: mapping failed: {e}")))?;
        let ticks: u64 = {
            let view = t
                .read
                .get_mapped_range(..)
                .map_err(|e| Error::Device(format!("timestamps: {e}")))?;
            let stamps: &[u64] = bytemuck::cast_slice(&view);
            stamps[..2 * used as usize]
                .chunks_exact(2)
                .map(|p| p[1].saturating_sub(p[0]))
                .sum()
        };
        t.read.unmap();
        Ok(Some(
            ticks as f64 * ctx.queue.get_timestamp_period() as f64 * 1e-9,
        ))
    }

    /// Submit everything recorded; report errors the device raised meanwhile.
    pub(crate) fn submit(mut self) -> Result<()> {
        super::kernels::optim::flush_adam(&mut self)?;
        self.end_pass();
        self.flush_uniforms();
        let encoder = self.encoder.take().expect("present until submit");
        self.ctx.queue.submit([encoder.finish()]);
        self.return_uniforms();
        self.ctx.tick_and_trim();
        let errors = self.error_scopes.take().map(|(oom, validation)| {
            let v = pollster::block_on(validation.pop());
            let o = pollster::block_on(oom.pop());
            (o, v)
        });
        if let Some((o, v)) = errors {
            if let Some(e) = o {
                self.ctx.release_pool();
                return Err(Error::OutOfMemory(format!(
                    "{} ran out of memory ({e}); the buffer pool was released, so smaller work \
                     (a smaller batch) can continue",
                    self.ctx.name
                )));
            }
            if let Some(e) = v {
                return Err(self.ctx.lost_or(Error::Device(format!(
                    "wgpu validation failed on {}: {e}",
                    self.ctx.name
                ))));
            }
        }
        if let Some(flag) = self.index_flag.take() {
            let deferred = DEFERRED_INDEX_FLAGS.with(|d| match d.borrow_mut().as_mut() {
                Some(flags) => {
                    flags.push(flag.clone());
                    true
                }
                None => false,
            });
            if !deferred {
                let host = to_host(&flag)?;
                if let Storage::I32(v) = host.storage.as_ref() {
                    if let Some(e) = index_error(v[0], v[1]) {
                        return Err(e);
                    }
                }
            }
        }
        self.ctx.check_alive()
    }
}

thread_local! {
    /// Where submits on this thread put their index-error flags while a
    /// caller defers the check (see [`deferring_index_checks`]).
    static DEFERRED_INDEX_FLAGS: std::cell::RefCell<Option<Vec<Value>>> =
        const { std::cell::RefCell::new(None) };
}

/// Run `f` with the index-error checks of its submits deferred, returning
/// their flags: the caller reads them in the same copy as its own results
/// ([`crate::backend::first_elements`]), one wait instead of one per
/// submit. Only for callers that discard what `f` computed when a flag is
/// set (an optimizer step keeps its old parameters).
pub(crate) fn deferring_index_checks<T>(f: impl FnOnce() -> T) -> (T, Vec<Value>) {
    let outer = DEFERRED_INDEX_FLAGS.with(|d| d.borrow_mut().replace(Vec::new()));
    let out = f();
    let flags = DEFERRED_INDEX_FLAGS.with(|d| std::mem::replace(&mut *d.borrow_mut(), outer));
    (out, flags.unwrap_or_default())
}

/// The error an index flag's two words (set, first bad index) stand for.
pub(crate) fn index_error(set: i32, index: i32) -> Option<Error> {
    (set != 0).then(|| {
        Error::param(
            "gather/scatter_add",
            format!("index {index} is out of range for its axis; indices must lie in 0..size"),
        )
    })
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // An abandoned recording (an error midway) still submits what it
        // has, so buffers return to the pool in a consistent order.
        self.end_pass();
        if let Some(encoder) = self.encoder.take() {
            self.flush_uniforms();
            self.ctx.queue.submit([encoder.finish()]);
            self.return_uniforms();
        }
        // Scopes pop innermost first.
        if let Some((oom, validation)) = self.error_scopes.take() {
            drop(validation);
            drop(oom);
        }
    }
}

/// Workgroup grid for `n` invocations at `size` per group, folded into y
/// when x would exceed the dispatch limit. Kernels rebuild the flat index as
/// `gid.x + gid.y * nwg.x * size`.
pub(crate) fn grid(n: usize, size: u32) -> (u32, u32, u32) {
    let groups = (n as u64).div_ceil(size as u64).max(1);
    if groups <= MAX_GROUPS as u64 {
        (groups as u32, 1, 1)
    } else {
        let y = groups.div_ceil(MAX_GROUPS as u64);
        (MAX_GROUPS, y as u32, 1)
    }
}

/// Timestamp queries around compute passes: two per pass.
#[cfg(feature = "bench")]
struct PassTimestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    /// Passes this set can time, and passes begun.
    capacity: u32,
    used: u32,
}

#[cfg(feature = "bench")]
impl PassTimestamps {
    fn new(ctx: &Context) -> Option<PassTimestamps> {
        if !ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return None;
        }
        const CAPACITY: u32 = 256;
        let bytes = 16 * CAPACITY as u64;
        let buffer = |usage, label| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Some(PassTimestamps {
            set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * CAPACITY,
            }),
            resolve: buffer(
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                "timestamps",
            ),
            read: buffer(
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                "timestamps read",
            ),
            capacity: CAPACITY,
            used: 0,
        })
    }

    /// The writes of the next pass (none once the set is full).
    fn next(&mut self) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let i = self.used;
        self.used += 1;
        (i < self.capacity).then_some(wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }
}

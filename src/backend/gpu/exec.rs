//! Each primitive as a dispatch of its WGSL kernel.

use super::emit::{self, padded, MAX_RANK, WORKGROUP};
use super::{grid, shaders, Bind, Recorder, MAX_GROUPS};
use crate::backend::cpu::elementwise::{collapse, hash32, Instr, Program};
use crate::backend::Value;
use crate::op::{ConvGeom, Op, PoolGeom, PoolKind, ReduceOp};
use crate::shape::{contiguous_strides, numel, Layout};
use crate::{DType, Error, Result};

/// Run one primitive on the recorder's device. `shape`/`dtype` are the node's.
pub fn exec(
    rec: &mut Recorder,
    op: &Op,
    inputs: &[Value],
    shape: &[usize],
    dtype: DType,
) -> Result<Value> {
    let inputs = inputs
        .iter()
        .map(|v| rec.on_device(v))
        .collect::<Result<Vec<_>>>()?;
    let x = |i: usize| &inputs[i];
    Ok(match op {
        Op::Buffer => {
            return Err(Error::param(
                "buffer",
                "a buffer node has no value (internal)",
            ))
        }
        Op::Full(v) => rec.constant(*v, dtype, shape)?,
        Op::Rand { seed } => {
            let k1 = hash32(*seed as u32);
            let k2 = hash32((seed >> 32) as u32 ^ 0x9e37_79b9);
            fill(rec, "rand", shape, DType::F32, &[k1, k2])?
        }
        Op::Arange { start, step } => match dtype {
            DType::F32 => fill(
                rec,
                "arange_f32",
                shape,
                dtype,
                &[(*start as f32).to_bits(), (*step as f32).to_bits()],
            )?,
            DType::I32 => fill(
                rec,
                "arange_i32",
                shape,
                dtype,
                &[*start as i32 as u32, *step as i32 as u32],
            )?,
        },
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_) => {
            let program = Program {
                leaves: inputs.len(),
                instrs: vec![Instr {
                    op: op.clone(),
                    args: (0..inputs.len()).collect(),
                }],
            };
            fused(rec, &program, &inputs, shape)?
        }
        Op::Detach => x(0).clone(),
        Op::Reduce { op, axes } => reduce(rec, *op, axes, x(0))?,
        Op::Reshape => match x(0).layout.reshape(shape) {
            Some(layout) => Value {
                storage: x(0).storage.clone(),
                layout,
            },
            None => {
                let mut c = dense(rec, x(0))?;
                c.layout = Layout::contiguous(shape);
                c
            }
        },
        Op::Permute(p) => view(x(0), x(0).layout.permute(p)),
        Op::Expand => view(x(0), x(0).layout.expand(shape)),
        Op::Shrink(r) => view(x(0), x(0).layout.shrink(r)),
        Op::Pad(p) => pad(rec, x(0), p, shape)?,
        Op::Contiguous => dense(rec, x(0))?,
        Op::MatMul => matmul(rec, x(0), x(1), shape, "main")?,
        Op::Conv2d(g) => conv(rec, 1, x(0), x(1), g, shape)?,
        Op::Conv2dBackwardData(g) => conv(rec, 2, x(0), x(1), g, shape)?,
        Op::Conv2dBackwardFilter(g) => conv(rec, 3, x(0), x(1), g, shape)?,
        Op::Pool2d { kind, geom } => pool(rec, *kind, geom, x(0), None, shape)?,
        Op::Pool2dBackward { kind, geom } => pool(
            rec,
            *kind,
            geom,
            x(0),
            Some(x(1)),
            x(0).layout.shape.as_slice(),
        )?,
        Op::Gather { axis } => index(rec, "gather", x(1), x(0), *axis, shape)?,
        Op::ScatterAdd { axis } => index(rec, "scatter_add", x(0), x(1), *axis, shape)?,
    })
}

fn view(v: &Value, layout: Layout) -> Value {
    Value {
        storage: v.storage.clone(),
        layout,
    }
}

fn with_shape(mut v: Value, shape: &[usize]) -> Value {
    v.layout = Layout::contiguous(shape);
    v
}

fn dtype_of(v: &Value) -> DType {
    v.storage.dtype()
}

/// A new output and a 1-D dispatch over its elements of `entry` in fill.wgsl.
fn fill(
    rec: &mut Recorder,
    entry: &'static str,
    shape: &[usize],
    dtype: DType,
    args: &[u32],
) -> Result<Value> {
    let n = numel(shape);
    let out = rec.output(entry, n, dtype)?;
    if n > 0 {
        let pipeline = rec.ctx.pipeline("fill.wgsl", shaders::FILL, entry, &[])?;
        let mut params = vec![n as u32];
        params.extend_from_slice(args);
        rec.dispatch(&pipeline, &params, &[Bind::Write(&out)], grid(n, WORKGROUP))?;
    }
    Ok(with_shape(out, shape))
}

/// One elementwise program (a single op or a fused chain) as one dispatch.
pub fn fused(
    rec: &mut Recorder,
    program: &Program,
    inputs: &[Value],
    shape: &[usize],
) -> Result<Value> {
    let inputs = inputs
        .iter()
        .map(|v| rec.on_device(v))
        .collect::<Result<Vec<_>>>()?;
    let leaves: Vec<(DType, &Layout)> = inputs.iter().map(|v| (dtype_of(v), &v.layout)).collect();
    let kernel = emit::elementwise(program, &leaves, shape)?;
    let out = rec.output("elementwise", kernel.n, kernel.out_dtype)?;
    if kernel.n > 0 {
        let pipeline = rec
            .ctx
            .pipeline("fused elementwise", &kernel.source, "main", &[])?;
        let mut binds = vec![Bind::Write(&out)];
        binds.extend(inputs.iter().map(Bind::Read));
        rec.dispatch(&pipeline, &kernel.params, &binds, grid(kernel.n, WORKGROUP))?;
    }
    Ok(with_shape(out, shape))
}

/// `v`, or a one-element stand-in when it has no elements: every binding
/// needs a buffer, and the kernel never reads an empty operand.
fn bindable(rec: &mut Recorder, v: &Value) -> Result<Value> {
    if v.layout.numel() == 0 {
        rec.output("stand-in", 1, dtype_of(v))
    } else {
        Ok(v.clone())
    }
}

fn too_many_axes(op: &'static str, shape: &[usize]) -> Error {
    Error::shape(
        op,
        &[shape],
        format!("the gpu kernels take at most {MAX_RANK} axes after merging adjacent ones; reshape to fewer axes first"),
    )
}

/// A dense row-major copy (the value itself when it already is one).
pub(crate) fn dense(rec: &mut Recorder, v: &Value) -> Result<Value> {
    if v.layout.is_contiguous() && v.layout.offset == 0 {
        return Ok(v.clone());
    }
    let shape = v.layout.shape.clone();
    let n = numel(&shape);
    let out = rec.output("contiguous", n, dtype_of(v))?;
    if n > 0 {
        let (cshape, cl) = collapse(&shape, &[&v.layout]);
        if cshape.len() > MAX_RANK {
            return Err(too_many_axes("contiguous", &shape));
        }
        let mut params = vec![n as u32, cshape.len() as u32];
        params.extend(padded(&cshape));
        params.push(cl[0].offset as u32);
        params.extend(padded(&cl[0].strides));
        let pipeline = rec.ctx.pipeline("copy.wgsl", shaders::COPY, "copy", &[])?;
        rec.dispatch(
            &pipeline,
            &params,
            &[Bind::Read(v), Bind::Write(&out)],
            grid(n, WORKGROUP),
        )?;
    }
    Ok(with_shape(out, &shape))
}

fn pad(rec: &mut Recorder, v: &Value, pads: &[(usize, usize)], shape: &[usize]) -> Result<Value> {
    let n = numel(shape);
    let out = rec.output("pad", n, dtype_of(v))?;
    if n > 0 {
        if shape.len() > MAX_RANK {
            return Err(too_many_axes("pad", shape));
        }
        let mut params = vec![n as u32, shape.len() as u32];
        params.extend(padded(shape));
        params.push(v.layout.offset as u32);
        params.extend(padded(&v.layout.strides));
        params.extend(padded(&pads.iter().map(|p| p.0).collect::<Vec<_>>()));
        params.extend(padded(&v.layout.shape));
        let pipeline = rec.ctx.pipeline("copy.wgsl", shaders::COPY, "pad", &[])?;
        let src = bindable(rec, v)?;
        rec.dispatch(
            &pipeline,
            &params,
            &[Bind::Read(&src), Bind::Write(&out)],
            grid(n, WORKGROUP),
        )?;
    }
    Ok(with_shape(out, shape))
}

fn reduce(rec: &mut Recorder, op: ReduceOp, axes: &[usize], x: &Value) -> Result<Value> {
    let shape = &x.layout.shape;
    let out_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let n_out = numel(&out_shape);
    let out = rec.output("reduce", n_out, dtype_of(x))?;
    if n_out == 0 {
        return Ok(with_shape(out, &out_shape));
    }
    let split = |keep: bool| {
        let dims: Vec<usize> = (0..shape.len())
            .filter(|d| axes.contains(d) != keep)
            .collect();
        let layout = Layout {
            shape: dims.iter().map(|&d| shape[d]).collect(),
            strides: dims.iter().map(|&d| x.layout.strides[d]).collect(),
            offset: 0,
        };
        let (s, l) = collapse(&layout.shape, &[&layout]);
        (s, l[0].strides.clone())
    };
    let (kept_shape, kept_strides) = split(true);
    let (red_shape, red_strides) = split(false);
    if kept_shape.len() > MAX_RANK || red_shape.len() > MAX_RANK {
        return Err(too_many_axes("reduce", shape));
    }
    let row = numel(&red_shape);
    let mut params = vec![
        n_out as u32,
        row as u32,
        kept_shape.len() as u32,
        red_shape.len() as u32,
        x.layout.offset as u32,
    ];
    for v in [&kept_shape, &kept_strides, &red_shape, &red_strides] {
        params.extend(padded(v));
    }
    let constants = [
        ("OP", if op == ReduceOp::Sum { 0.0 } else { 1.0 }),
        (
            "INT_INPUT",
            if dtype_of(x) == DType::I32 { 1.0 } else { 0.0 },
        ),
    ];
    // Short rows or many outputs: one invocation per output; else a
    // workgroup per output.
    let (entry, groups) = if row <= 64 || n_out >= 16_384 {
        ("rows", grid(n_out, WORKGROUP))
    } else {
        ("tree", grid(n_out, 1))
    };
    let pipeline = rec
        .ctx
        .pipeline("reduce.wgsl", shaders::REDUCE, entry, &constants)?;
    let src = bindable(rec, x)?;
    rec.dispatch(
        &pipeline,
        &params,
        &[Bind::Read(&src), Bind::Write(&out)],
        groups,
    )?;
    Ok(with_shape(out, &out_shape))
}

/// Dispatch a GEMM-shaped kernel over an (n tiles, m tiles, z) grid,
/// splitting x and z beyond the per-dimension workgroup limit.
#[allow(clippy::too_many_arguments)]
fn gemm_dispatch(
    rec: &mut Recorder,
    pipeline: &wgpu::ComputePipeline,
    params: &mut [u32],
    binds: &[Bind<'_>],
    tiles_n: usize,
    tiles_m: usize,
    z: usize,
    op: &'static str,
) -> Result<()> {
    if tiles_m > MAX_GROUPS as usize {
        return Err(Error::param(
            op,
            format!("{tiles_m} row tiles exceed the device's {MAX_GROUPS} workgroups per dimension; split the operation"),
        ));
    }
    let max = MAX_GROUPS as usize;
    let mut z0 = 0;
    while z0 < z {
        let zc = (z - z0).min(max);
        let mut n0 = 0;
        while n0 < tiles_n {
            let nc = (tiles_n - n0).min(max);
            params[3] = n0 as u32;
            params[20] = z0 as u32;
            rec.dispatch(
                pipeline,
                params,
                binds,
                (nc as u32, tiles_m as u32, zc as u32),
            )?;
            n0 += nc;
        }
        z0 += zc;
    }
    Ok(())
}

/// Which matmul kernel runs: `main` of gemm.wgsl (register-blocked) in the
/// engine; `naive` and `tiled` of matmul.wgsl for the benchmark.
pub fn matmul(
    rec: &mut Recorder,
    a: &Value,
    b: &Value,
    shape: &[usize],
    version: &str,
) -> Result<Value> {
    let r = shape.len();
    let (m, n) = (shape[r - 2], shape[r - 1]);
    let k = a.layout.shape[r - 1];
    let batch_shape = &shape[..r - 2];
    let batch = numel(batch_shape);
    let out = rec.output("matmul", numel(shape), DType::F32)?;
    if numel(shape) == 0 {
        return Ok(with_shape(out, shape));
    }
    if k == 0 {
        rec.clear(&out);
        return Ok(with_shape(out, shape));
    }
    // The batch axes of both operands as one stride each, or dense copies.
    let batch_stride = |v: &Value| -> Option<(usize, usize)> {
        let l = Layout {
            shape: batch_shape.to_vec(),
            strides: v.layout.strides[..r - 2].to_vec(),
            offset: 0,
        };
        let (s, c) = collapse(batch_shape, &[&l]);
        match s.len() {
            0 => Some((0, 0)),
            1 => Some((s[0], c[0].strides[0])),
            _ => None,
        }
    };
    let (a, b) = match (batch_stride(a), batch_stride(b)) {
        (Some(_), Some(_)) => (a.clone(), b.clone()),
        _ => (dense(rec, a)?, dense(rec, b)?),
    };
    let sa = batch_stride(&a).map_or(0, |s| s.1);
    let sb = batch_stride(&b).map_or(0, |s| s.1);
    let (la, lb) = (&a.layout, &b.layout);
    let mut params = vec![0u32; 23];
    params[21] = 1;
    params[22] = k as u32;
    params[..12].copy_from_slice(&[
        m as u32,
        n as u32,
        k as u32,
        0,
        la.offset as u32,
        sa as u32,
        la.strides[r - 2] as u32,
        la.strides[r - 1] as u32,
        lb.offset as u32,
        sb as u32,
        lb.strides[r - 2] as u32,
        lb.strides[r - 1] as u32,
    ]);
    let (pipeline, tile) = if version == "main" {
        let p = rec
            .ctx
            .pipeline("gemm.wgsl", shaders::GEMM, "main", &[("MODE", 0.0)])?;
        (p, 64)
    } else {
        let p = rec
            .ctx
            .pipeline("matmul.wgsl", shaders::MATMUL, version, &[])?;
        (p, 16)
    };
    // gemm.wgsl declares the convolution table; matmul does not read it.
    let unused_taps = rec.output("matmul", 4, DType::I32)?;
    let taps = if version == "main" {
        Bind::Read(&unused_taps)
    } else {
        Bind::Skip
    };
    gemm_dispatch(
        rec,
        &pipeline,
        &mut params,
        &[Bind::Read(&a), Bind::Read(&b), Bind::Write(&out), taps],
        n.div_ceil(tile),
        m.div_ceil(tile),
        batch,
        "matmul",
    )?;
    Ok(with_shape(out, shape))
}

/// The three convolutions as implicit GEMMs (gemm.wgsl MODE 1-3). Operand
/// pairs: forward (x, w), backward-data (dy, w), backward-filter (x, dy).
fn conv(
    rec: &mut Recorder,
    mode: u32,
    p: &Value,
    q: &Value,
    g: &ConvGeom,
    shape: &[usize],
) -> Result<Value> {
    let out = rec.output("conv2d", numel(shape), DType::F32)?;
    if numel(shape) == 0 {
        return Ok(with_shape(out, shape));
    }
    let (p, q) = (dense(rec, p)?, dense(rec, q)?);
    // x [n, c, h, w], weight [o, c/g, kh, kw], dy [n, o, oh, ow]
    let (x_shape, w_shape, y_shape): (Vec<usize>, Vec<usize>, Vec<usize>) = match mode {
        1 => (
            p.layout.shape.clone(),
            q.layout.shape.clone(),
            shape.to_vec(),
        ),
        2 => (
            shape.to_vec(),
            q.layout.shape.clone(),
            p.layout.shape.clone(),
        ),
        _ => (
            p.layout.shape.clone(),
            shape.to_vec(),
            q.layout.shape.clone(),
        ),
    };
    let (nb, c, h, w) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let (o, kh, kw) = (w_shape[0], w_shape[2], w_shape[3]);
    let (oh, ow) = (y_shape[2], y_shape[3]);
    let groups = g.groups;
    let (cg, og) = (c / groups, o / groups);
    let (m, n, k) = match mode {
        1 => (og, nb * oh * ow, cg * kh * kw),
        2 => (cg, nb * h * w, og * kh * kw),
        _ => (og, cg * kh * kw, nb * oh * ow),
    };
    if k == 0 {
        rec.clear(&out);
        return Ok(with_shape(out, shape));
    }
    let mut params = vec![0u32; 23];
    params[..20].copy_from_slice(&[
        m as u32,
        n as u32,
        k as u32,
        0,
        nb as u32,
        c as u32,
        h as u32,
        w as u32,
        o as u32,
        oh as u32,
        ow as u32,
        kh as u32,
        kw as u32,
        g.stride.0 as u32,
        g.stride.1 as u32,
        g.padding.0 as u32,
        g.padding.1 as u32,
        g.dilation.0 as u32,
        g.dilation.1 as u32,
        groups as u32,
    ]);
    // Binding a = weight (fwd, bwd-data) or dy (bwd-filter); b = x or dy.
    let (a, b) = (&q, &p);
    let taps = conv_taps(rec, mode, &params)?;
    let pipeline =
        rec.ctx
            .pipeline("gemm.wgsl", shaders::GEMM, "main", &[("MODE", mode as f64)])?;
    // Backward-filter reduces over the whole batch into few output tiles:
    // split K so the device has enough workgroups, then sum the slices.
    let tiles = n.div_ceil(64) * m.div_ceil(64) * groups;
    let splits = if mode == 3 {
        k.div_ceil(256).min(256usize.div_ceil(tiles)).max(1)
    } else {
        1
    };
    let chunk = k.div_ceil(splits).next_multiple_of(16);
    let splits = k.div_ceil(chunk);
    params[21] = splits as u32;
    params[22] = chunk as u32;
    let target = if splits > 1 {
        rec.output("conv2d split-k", splits * numel(shape), DType::F32)?
    } else {
        out.clone()
    };
    gemm_dispatch(
        rec,
        &pipeline,
        &mut params,
        &[
            Bind::Read(a),
            Bind::Read(b),
            Bind::Write(&target),
            Bind::Read(&taps),
        ],
        n.div_ceil(64),
        m.div_ceil(64),
        groups * splits,
        "conv2d",
    )?;
    if splits > 1 {
        drop(out);
        let partial = Value {
            storage: target.storage.clone(),
            layout: Layout::contiguous(&[splits, numel(shape)]),
        };
        drop(target);
        let sum = reduce(rec, ReduceOp::Sum, &[0], &partial)?;
        return Ok(with_shape(sum, shape));
    }
    Ok(with_shape(out, shape))
}

/// The per-k offsets gemm.wgsl reads for a convolution (layout in its
/// header), built on the host once per mode and geometry.
fn conv_taps(rec: &mut Recorder, mode: u32, params: &[u32]) -> Result<Value> {
    let mut key = vec![mode];
    key.extend_from_slice(&params[..20]);
    if let Some(v) = super::lock(&rec.ctx.conv_tables).get(&key) {
        return Ok(v.clone());
    }
    let g = |i: usize| params[i] as i32;
    // The geometry words of gemm.wgsl's params (see its header).
    let (k, c, h, w, o) = (g(2), g(5), g(6), g(7), g(8));
    let (oh, ow, kh, kw) = (g(9), g(10), g(11), g(12));
    let (sh, sw, ph, pw, dh, dw) = (g(13), g(14), g(15), g(16), g(17), g(18));
    let (cg, taps) = (c / g(19), kh * kw);
    let mut table: Vec<i32> = Vec::with_capacity(4 * k as usize);
    for k in 0..k {
        let entry = match mode {
            1 => {
                let (chan, t) = (k / taps, k % taps);
                let (ky, kx) = (t / kw, t % kw);
                [chan * h * w + ky * dh * w + kx * dw, ky * dh, kx * dw, 0]
            }
            2 => {
                let (oo, t) = (k / taps, k % taps);
                let (ky, kx) = (t / kw, t % kw);
                [oo * cg * taps + t, oo * oh * ow, ky * dh, kx * dw]
            }
            _ => {
                let plane = oh * ow;
                let (img, s) = (k / plane, k % plane);
                let (oy, ox) = (s / ow, s % ow);
                [
                    img * o * plane + oy * ow + ox,
                    img * c * h * w,
                    oy * sh - ph,
                    ox * sw - pw,
                ]
            }
        };
        table.extend_from_slice(&entry);
    }
    let host = Value::i32(table, &[4 * k as usize]);
    let v = rec.on_device(&host)?;
    super::lock(&rec.ctx.conv_tables).insert(key, v.clone());
    Ok(v)
}

fn pool(
    rec: &mut Recorder,
    kind: PoolKind,
    g: &PoolGeom,
    x: &Value,
    dy: Option<&Value>,
    shape: &[usize],
) -> Result<Value> {
    let n = numel(shape);
    let out = rec.output("pool2d", n, DType::F32)?;
    if n == 0 {
        return Ok(with_shape(out, shape));
    }
    let x = dense(rec, x)?;
    let (h, w) = (x.layout.shape[2], x.layout.shape[3]);
    let (oh, ow, dy) = match dy {
        Some(d) => (d.layout.shape[2], d.layout.shape[3], Some(dense(rec, d)?)),
        None => (shape[2], shape[3], None),
    };
    let params = [
        n as u32,
        h as u32,
        w as u32,
        oh as u32,
        ow as u32,
        g.kernel.0 as u32,
        g.kernel.1 as u32,
        g.stride.0 as u32,
        g.stride.1 as u32,
        g.padding.0 as u32,
        g.padding.1 as u32,
    ];
    let kind_c = [("KIND", if kind == PoolKind::Max { 0.0 } else { 1.0 })];
    let entry = if dy.is_some() { "backward" } else { "forward" };
    let pipeline = rec
        .ctx
        .pipeline("pool2d.wgsl", shaders::POOL2D, entry, &kind_c)?;
    match &dy {
        Some(d) if d.layout.numel() > 0 => rec.dispatch(
            &pipeline,
            &params,
            &[Bind::Read(&x), Bind::Read(d), Bind::Write(&out)],
            grid(n, WORKGROUP),
        )?,
        Some(_) => rec.clear(&out),
        None => rec.dispatch(
            &pipeline,
            &params,
            &[Bind::Read(&x), Bind::Skip, Bind::Write(&out)],
            grid(n, WORKGROUP),
        )?,
    }
    Ok(with_shape(out, shape))
}

/// Gather (`src` gathered along `axis` at `index`) or scatter-add (`src`
/// added into zeros of `shape` at `index`).
fn index(
    rec: &mut Recorder,
    entry: &str,
    index: &Value,
    src: &Value,
    axis: usize,
    shape: &[usize],
) -> Result<Value> {
    let op: &'static str = if entry == "gather" {
        "gather"
    } else {
        "scatter_add"
    };
    let out = rec.output(op, numel(shape), DType::F32)?;
    let n = index.layout.numel();
    if entry == "scatter_add" {
        rec.clear(&out);
    }
    if n == 0 || numel(shape) == 0 {
        return Ok(with_shape(out, shape));
    }
    let idx_shape = index.layout.shape.clone();
    if idx_shape.len() > MAX_RANK {
        return Err(too_many_axes(op, &idx_shape));
    }
    let index = dense(rec, index)?;
    let src = if dtype_of(src) == DType::I32 {
        let cast = Program {
            leaves: 1,
            instrs: vec![Instr {
                op: Op::Cast(DType::F32),
                args: vec![0],
            }],
        };
        fused(
            rec,
            &cast,
            std::slice::from_ref(src),
            &src.layout.shape.clone(),
        )?
    } else {
        dense(rec, src)?
    };
    // Strides of the tensor the indices point into.
    let (target_shape, axis_size) = if op == "gather" {
        (src.layout.shape.clone(), src.layout.shape[axis])
    } else {
        (shape.to_vec(), shape[axis])
    };
    let mut params = vec![
        n as u32,
        idx_shape.len() as u32,
        axis as u32,
        axis_size as u32,
    ];
    params.extend(padded(&idx_shape));
    params.extend(padded(&contiguous_strides(&target_shape)));
    let flag = match rec.index_flag.take() {
        Some(f) => f,
        None => {
            let f = rec.output("index flag", 2, DType::I32)?;
            rec.clear(&f);
            f
        }
    };
    let pipeline = rec.ctx.pipeline("index.wgsl", shaders::INDEX, entry, &[])?;
    let result = rec.dispatch(
        &pipeline,
        &params,
        &[
            Bind::Read(&index),
            Bind::Read(&src),
            Bind::Write(&flag),
            Bind::Write(&out),
        ],
        grid(n, WORKGROUP),
    );
    rec.index_flag = Some(flag);
    result?;
    Ok(with_shape(out, shape))
}

//! copy.wgsl: strided views made dense, and zero padding.

use super::{dtype_of, too_many_axes, with_shape, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, words8, Shader, U8x};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::shape::{collapse, numel};
use crate::Result;

kernel_params!(CopyParams {
    n: u32,
    rank: u32,
    offset: u32,
    _pad: u32,
    shape: U8x,
    strides: U8x,
    pad_before: U8x,
    src_shape: U8x,
});

#[derive(Clone, Copy)]
enum Entry {
    Copy,
    Pad,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Copy => "copy",
            Entry::Pad => "pad",
        }
    }
}

/// A dense row-major copy (the value itself when it already is one).
pub(crate) fn dense(rec: &mut Recorder, v: &Value) -> Result<Value> {
    if v.layout.is_contiguous() && v.layout.offset == 0 {
        return Ok(v.clone());
    }
    dense_always(rec, v)
}

/// A new dense buffer holding `v`'s elements, even when `v` is dense.
pub(crate) fn dense_always(rec: &mut Recorder, v: &Value) -> Result<Value> {
    let shape = v.layout.shape.clone();
    let n = numel(&shape);
    let out = rec.output("contiguous", n, dtype_of(v))?;
    if n > 0 {
        let (cshape, cl) = collapse(&shape, &[&v.layout]);
        let (Some(s), Some(st)) = (words8(&cshape), words8(&cl[0].strides)) else {
            return Err(too_many_axes("contiguous", &shape));
        };
        let params = CopyParams {
            n: n as u32,
            rank: cshape.len() as u32,
            offset: cl[0].offset as u32,
            shape: s,
            strides: st,
            ..Default::default()
        };
        let pipeline = rec.ctx.pipeline(Shader::Copy, Entry::Copy.name(), &[])?;
        rec.dispatch(
            &pipeline,
            &params,
            &[Bind::Read(v), Bind::Write(&out)],
            grid(n, WORKGROUP),
        )?;
    }
    Ok(with_shape(out, &shape))
}

/// Zero padding `pads` (before, after) around `v`, giving `shape`.
pub(crate) fn pad(
    rec: &mut Recorder,
    v: &Value,
    pads: &[(usize, usize)],
    shape: &[usize],
) -> Result<Value> {
    let n = numel(shape);
    let out = rec.output("pad", n, dtype_of(v))?;
    if n > 0 {
        let before: Vec<usize> = pads.iter().map(|p| p.0).collect();
        let (Some(s), Some(st), Some(b), Some(ss)) = (
            words8(shape),
            words8(&v.layout.strides),
            words8(&before),
            words8(&v.layout.shape),
        ) else {
            return Err(too_many_axes("pad", shape));
        };
        let params = CopyParams {
            n: n as u32,
            rank: shape.len() as u32,
            offset: v.layout.offset as u32,
            shape: s,
            strides: st,
            pad_before: b,
            src_shape: ss,
            ..Default::default()
        };
        let pipeline = rec.ctx.pipeline(Shader::Copy, Entry::Pad.name(), &[])?;
        let src = super::bindable(rec, v)?;
        rec.dispatch(
            &pipeline,
            &params,
            &[Bind::Read(&src), Bind::Write(&out)],
            grid(n, WORKGROUP),
        )?;
    }
    Ok(with_shape(out, shape))
}

//! Batched matmul on the `gemm` crate, reading strided inputs in place.

use rayon::prelude::*;

use super::f32_data;
use crate::backend::{Storage, Value};
use crate::shape::Layout;

/// `c[m, n] = a[m, k] @ b[k, n]` for strided operands (strides in elements).
/// `c` is dense row-major with row stride `n`.
///
/// # Safety
/// `a` and `b` must cover every element their strides address.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    c: *mut f32,
    accumulate: bool,
    threads: bool,
) {
    gemm_into(
        m,
        n,
        k,
        (a, a_rs, a_cs),
        (b, b_rs, b_cs),
        (c, n as isize, 1),
        accumulate,
        threads,
    );
}

/// `gemm_strided` with `c` strided too: (pointer, row stride, column
/// stride) for each matrix.
///
/// # Safety
/// Every matrix must cover every element its strides address.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    (a, a_rs, a_cs): (*const f32, isize, isize),
    (b, b_rs, b_cs): (*const f32, isize, isize),
    (c, c_rs, c_cs): (*mut f32, isize, isize),
    accumulate: bool,
    threads: bool,
) {
    let par = if threads {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m, n, k, c, c_cs, c_rs, accumulate, a, a_cs, a_rs, b, b_cs, b_rs, 1.0, 1.0, false, false,
        false, par,
    );
}

/// Element strides of a 2-D matrix inside a strided layout, or None when a
/// stride is 0 in a dimension of size > 1 (gemm wants real strides there).
fn matrix_strides(l: &Layout) -> (isize, isize) {
    let r = l.shape.len();
    let rs = if l.shape[r - 2] == 1 {
        1
    } else {
        l.strides[r - 2] as isize
    };
    let cs = if l.shape[r - 1] == 1 {
        1
    } else {
        l.strides[r - 1] as isize
    };
    (rs, cs)
}

pub fn matmul(a: &Value, b: &Value, out_shape: &[usize]) -> Value {
    let r = out_shape.len();
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let k = a.layout.shape[r - 1];
    let batch: usize = out_shape[..r - 2].iter().product();
    let mut out = vec![0.0f32; batch * m * n];
    if out.is_empty() {
        return Value::f32(out, out_shape);
    }
    // Materialise only operands whose layout gemm cannot read (size-0 reads or stride-0 matrices).
    let dense_if_needed = |v: &Value| -> Value {
        let l = &v.layout;
        let rr = l.shape.len();
        let zero_stride = (l.shape[rr - 2] > 1 && l.strides[rr - 2] == 0)
            || (l.shape[rr - 1] > 1 && l.strides[rr - 1] == 0);
        if zero_stride || !matches!(v.storage.as_ref(), Storage::F32(_)) {
            Value::f32(f32_data(v).into_owned(), &l.shape)
        } else {
            v.clone()
        }
    };
    let (a, b) = (dense_if_needed(a), dense_if_needed(b));
    let (Storage::F32(ad), Storage::F32(bd)) = (a.storage.as_ref(), b.storage.as_ref()) else {
        unreachable!("made f32 above")
    };
    if k == 0 {
        return Value::f32(out, out_shape);
    }
    let (a_rs, a_cs) = matrix_strides(&a.layout);
    let (b_rs, b_cs) = matrix_strides(&b.layout);
    let batch_shape = &out_shape[..r - 2];
    let batch_offset = |l: &Layout, mut i: usize| -> usize {
        let mut off = l.offset;
        for d in (0..batch_shape.len()).rev() {
            off += (i % batch_shape[d]) * l.strides[d];
            i /= batch_shape[d];
        }
        off
    };
    let run = |bi: usize, c: &mut [f32], threads: bool| unsafe {
        gemm_strided(
            m,
            n,
            k,
            ad.as_ptr().add(batch_offset(&a.layout, bi)),
            a_rs,
            a_cs,
            bd.as_ptr().add(batch_offset(&b.layout, bi)),
            b_rs,
            b_cs,
            c.as_mut_ptr(),
            false,
            threads,
        )
    };
    // Many small products: one per thread. Few large ones: gemm's own threads.
    if batch > 1 && m * n * k < (1 << 21) {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, c)| run(bi, c, false));
    } else {
        for (bi, c) in out.chunks_mut(m * n).enumerate() {
            run(bi, c, m * n * k >= 1 << 15);
        }
    }
    Value::f32(out, out_shape)
}

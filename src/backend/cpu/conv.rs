//! 2-D convolution and its two backward passes as im2col + GEMM, images in
//! parallel (each thread runs its own single-threaded GEMM).

use rayon::prelude::*;

use super::f32_data;
use super::matmul::{gemm_into, gemm_strided};
use crate::backend::Value;
use crate::op::ConvGeom;

/// Sizes of one convolution, derived from x `[n, c, h, w]` and weight `[o, c/g, kh, kw]`.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    g: ConvGeom,
}

impl Dims {
    fn new(x_shape: &[usize], w_shape: &[usize], y_shape: &[usize], g: &ConvGeom) -> Dims {
        Dims {
            n: x_shape[0],
            c: x_shape[1],
            h: x_shape[2],
            w: x_shape[3],
            o: w_shape[0],
            kh: w_shape[2],
            kw: w_shape[3],
            oh: y_shape[2],
            ow: y_shape[3],
            g: *g,
        }
    }
    fn cg(&self) -> usize {
        self.c / self.g.groups
    }
    fn og(&self) -> usize {
        self.o / self.g.groups
    }
    /// Rows of the im2col matrix for one group.
    fn col_rows(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    fn spatial(&self) -> usize {
        self.oh * self.ow
    }
    fn parallel_images(&self) -> bool {
        self.n >= rayon::current_num_threads()
    }
    /// Output columns `[lo, hi)` whose input column for kernel column `kj`
    /// lies inside the image (elsewhere im2col reads padding zeros).
    #[inline(always)]
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let s = self.g.stride.1 as isize;
        // iw = oj * s + off
        let off = (kj * self.g.dilation.1) as isize - self.g.padding.1 as isize;
        let lo = if off >= 0 {
            0
        } else {
            ((-off + s - 1) / s) as usize
        };
        let hi = if off >= self.w as isize {
            0
        } else {
            ((self.w as isize - off + s - 1) / s) as usize
        };
        let hi = hi.min(self.ow);
        (lo.min(hi), hi)
    }

    /// Input coordinate read by output `o` and kernel tap `k` along one axis.
    #[inline(always)]
    fn src(o: usize, k: usize, stride: usize, pad: usize, dil: usize) -> isize {
        (o * stride + k * dil) as isize - pad as isize
    }
}

/// For each kernel column `kj`: the output columns `[lo, hi)` that read
/// inside the image and the input column the first of them reads. The same
/// for every channel, kernel row and output row, so computed once per call.
fn column_spans(d: &Dims) -> Vec<(usize, usize, usize)> {
    (0..d.kw)
        .map(|kj| {
            let (lo, hi) = d.valid_cols(kj);
            let first = if lo < hi {
                Dims::src(lo, kj, d.g.stride.1, d.g.padding.1, d.g.dilation.1) as usize
            } else {
                0
            };
            (lo, hi, first)
        })
        .collect()
}

/// The input row read by output row `oi` at kernel row `ki`, if inside the image.
#[inline(always)]
fn source_row(d: &Dims, oi: usize, ki: usize) -> Option<usize> {
    let ih = Dims::src(oi, ki, d.g.stride.0, d.g.padding.0, d.g.dilation.0);
    (ih >= 0 && ih < d.h as isize).then_some(ih as usize)
}

/// `dst.copy_from_slice(src)` for the short rows of small feature maps
/// (4-30 floats here), as a few inline vector moves instead of a call into
/// memmove per row. Overlapping fixed-size moves cover every length.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let src = &src[..n];
    fn mv<const K: usize>(dst: &mut [f32], src: &[f32], at: usize) {
        let s: &[f32; K] = src[at..at + K].try_into().expect("in range");
        dst[at..at + K].copy_from_slice(s);
    }
    match n {
        0 => {}
        1 => dst[0] = src[0],
        2..=3 => {
            mv::<2>(dst, src, 0);
            mv::<2>(dst, src, n - 2);
        }
        4..=7 => {
            mv::<4>(dst, src, 0);
            mv::<4>(dst, src, n - 4);
        }
        8..=16 => {
            mv::<8>(dst, src, 0);
            mv::<8>(dst, src, n - 8);
        }
        17..=64 => {
            let mut i = 0;
            while i + 16 <= n {
                mv::<16>(dst, src, i);
                i += 16;
            }
            if i < n {
                mv::<16>(dst, src, n - 16);
            }
        }
        _ => dst.copy_from_slice(src),
    }
}

/// Unfold channels `[c0, c0+cg)` of one image into the `cg*kh*kw` rows of
/// `col`, `oh*ow` columns each, rows `row_stride` apart.
fn im2col(x_img: &[f32], d: &Dims, c0: usize, col: &mut [f32], row_stride: usize) {
    let sw = d.g.stride.1;
    if d.g.stride == (1, 1) && d.g.padding == (0, 0) {
        // Every row reads inside the image: plain row copies.
        for c in 0..d.cg() {
            let plane = &x_img[(c0 + c) * d.h * d.w..(c0 + c + 1) * d.h * d.w];
            for ki in 0..d.kh {
                for kj in 0..d.kw {
                    let row = ((c * d.kh + ki) * d.kw + kj) * row_stride;
                    let src = &plane[ki * d.g.dilation.0 * d.w + kj * d.g.dilation.1..];
                    let dst = &mut col[row..row + d.spatial()];
                    for (oi, line) in dst.chunks_exact_mut(d.ow).enumerate() {
                        copy_row(line, &src[oi * d.w..]);
                    }
                }
            }
        }
        return;
    }
    let spans = column_spans(d);
    for c in 0..d.cg() {
        let plane = &x_img[(c0 + c) * d.h * d.w..(c0 + c + 1) * d.h * d.w];
        for ki in 0..d.kh {
            for (kj, &(lo, hi, first)) in spans.iter().enumerate() {
                let row = ((c * d.kh + ki) * d.kw + kj) * row_stride;
                let dst = &mut col[row..row + d.spatial()];
                for (oi, line) in dst.chunks_exact_mut(d.ow).enumerate() {
                    let Some(ih) = source_row(d, oi, ki) else {
                        line.fill(0.0);
                        continue;
                    };
                    let src_row = &plane[ih * d.w..(ih + 1) * d.w];
                    // Only [lo, hi) reads inside the row; with stride 1 it is one slice copy.
                    line[..lo].fill(0.0);
                    line[hi..].fill(0.0);
                    if sw == 1 {
                        copy_row(&mut line[lo..hi], &src_row[first..]);
                    } else {
                        for (k, v) in line[lo..hi].iter_mut().enumerate() {
                            *v = src_row[first + k * sw];
                        }
                    }
                }
            }
        }
    }
}

/// Fold `col` back, adding into channels `[c0, c0+cg)` of one image (adjoint of im2col).
fn col2im(col: &[f32], d: &Dims, c0: usize, x_img: &mut [f32], row_stride: usize) {
    let sw = d.g.stride.1;
    if d.g.stride == (1, 1) && d.g.padding == (0, 0) {
        for c in 0..d.cg() {
            let plane = &mut x_img[(c0 + c) * d.h * d.w..(c0 + c + 1) * d.h * d.w];
            for ki in 0..d.kh {
                for kj in 0..d.kw {
                    let row = ((c * d.kh + ki) * d.kw + kj) * row_stride;
                    let at = ki * d.g.dilation.0 * d.w + kj * d.g.dilation.1;
                    let src = &col[row..row + d.spatial()];
                    for (oi, line) in src.chunks_exact(d.ow).enumerate() {
                        let dst = &mut plane[at + oi * d.w..at + oi * d.w + d.ow];
                        dst.iter_mut().zip(line).for_each(|(x, &v)| *x += v);
                    }
                }
            }
        }
        return;
    }
    let spans = column_spans(d);
    for c in 0..d.cg() {
        let plane = &mut x_img[(c0 + c) * d.h * d.w..(c0 + c + 1) * d.h * d.w];
        for ki in 0..d.kh {
            for (kj, &(lo, hi, first)) in spans.iter().enumerate() {
                let row = ((c * d.kh + ki) * d.kw + kj) * row_stride;
                let src = &col[row..row + d.spatial()];
                for (oi, line) in src.chunks_exact(d.ow).enumerate() {
                    let Some(ih) = source_row(d, oi, ki) else {
                        continue;
                    };
                    let dst_row = &mut plane[ih * d.w..(ih + 1) * d.w];
                    let line = &line[lo..hi];
                    if sw == 1 {
                        for (x, &v) in dst_row[first..first + line.len()].iter_mut().zip(line) {
                            *x += v;
                        }
                    } else {
                        for (k, &v) in line.iter().enumerate() {
                            dst_row[first + k * sw] += v;
                        }
                    }
                }
            }
        }
    }
}

/// True when im2col would just copy the image (1x1, stride 1, no padding).
fn is_pointwise(d: &Dims) -> bool {
    d.kh == 1 && d.kw == 1 && d.g.stride == (1, 1) && d.g.padding == (0, 0)
}

/// Images whose columns one GEMM covers. gemm packs the weights on every
/// call, so a call over one small feature map (conv3's 4x4 of seed-cnn)
/// spends more time packing than multiplying; a group of images gives each
/// call at least `MIN_COLUMNS` columns. At most the images one thread gets.
/// Few columns suffice: larger groups make the im2col matrix and the
/// gathered dy outgrow the caches (64 rather than 512 measured 10-30%
/// faster on ResNet-18's 4x4 and 8x8 layers and the DCGAN's 4x4 and 8x8
/// outputs in all three passes, equal elsewhere).
fn group_len(d: &Dims) -> usize {
    const MIN_COLUMNS: usize = 64;
    if is_pointwise(d) {
        // The image itself is the column matrix: no copy, one image per call.
        return 1;
    }
    let per_thread = d.n.div_ceil(rayon::current_num_threads()).max(1);
    MIN_COLUMNS
        .div_ceil(d.spatial().max(1))
        .clamp(1, per_thread)
}

/// Scratch matrices of one worker: columns and a gathered/scattered output.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    rows: Vec<f32>,
}

/// A group of consecutive images and one channel group of the convolution.
struct Part<'a> {
    d: &'a Dims,
    first: usize,
    images: usize,
    group: usize,
}

impl<'a> Part<'a> {
    /// The parts of `images` images from `first`: one per channel group.
    fn each_group(d: &'a Dims, first: usize, images: usize) -> impl Iterator<Item = Part<'a>> {
        (0..d.g.groups).map(move |group| Part {
            d,
            first,
            images,
            group,
        })
    }

    fn columns(&self) -> usize {
        self.images * self.d.spatial()
    }

    /// The im2col matrix `[cg*kh*kw, images*oh*ow]` of this part, as
    /// (pointer, row stride): the image itself for a pointwise convolution,
    /// else unfolded into `col`, image by image.
    fn unfold(&self, x: &[f32], col: &mut Vec<f32>) -> (*const f32, usize) {
        let d = self.d;
        let img_in = d.c * d.h * d.w;
        if is_pointwise(d) {
            let at = self.first * img_in + self.group * d.cg() * d.h * d.w;
            return (x[at..].as_ptr(), d.spatial());
        }
        let cols = self.columns();
        col.resize(d.col_rows() * cols, 0.0);
        for i in 0..self.images {
            let x_img = &x[(self.first + i) * img_in..(self.first + i + 1) * img_in];
            im2col(
                x_img,
                d,
                self.group * d.cg(),
                &mut col[i * d.spatial()..],
                cols,
            );
        }
        (col.as_ptr(), cols)
    }

    /// This part's rows of `[n, o, oh, ow]` (dy) as one matrix `[og,
    /// images*oh*ow]`: in place for one image, else gathered into `buf`.
    fn gather_out(&self, dy: &[f32], buf: &mut Vec<f32>) -> (*const f32, usize) {
        let (d, s) = (self.d, self.d.spatial());
        let img_out = d.o * s;
        let at = |i: usize, o: usize| (self.first + i) * img_out + (self.group * d.og() + o) * s;
        if self.images == 1 {
            return (dy[at(0, 0)..].as_ptr(), s);
        }
        let cols = self.columns();
        buf.resize(d.og() * cols, 0.0);
        for (o, row) in buf.chunks_exact_mut(cols).enumerate() {
            for (i, dst) in row.chunks_exact_mut(s).enumerate() {
                dst.copy_from_slice(&dy[at(i, o)..at(i, o) + s]);
            }
        }
        (buf.as_ptr(), cols)
    }

    /// This part's rows of dy transposed, `[images*oh*ow, og]`, into `buf`.
    fn gather_out_transposed(&self, dy: &[f32], buf: &mut Vec<f32>) {
        let (d, s) = (self.d, self.d.spatial());
        let (og, img_out) = (d.og(), d.o * s);
        buf.resize(self.columns() * og, 0.0);
        for i in 0..self.images {
            let img = &dy[(self.first + i) * img_out + self.group * og * s..];
            let dst = &mut buf[i * s * og..(i + 1) * s * og];
            for (p, row) in dst.chunks_exact_mut(og).enumerate() {
                for (o, v) in row.iter_mut().enumerate() {
                    *v = img[o * s + p];
                }
            }
        }
    }

    /// Write `[og, images*oh*ow]` back into this part's rows of y (`y_part`
    /// holds this part's images).
    fn scatter_out(&self, m: &[f32], y_part: &mut [f32]) {
        let (d, s) = (self.d, self.d.spatial());
        let cols = self.columns();
        for (o, row) in m.chunks_exact(cols).enumerate() {
            for (i, src) in row.chunks_exact(s).enumerate() {
                let at = i * d.o * s + (self.group * d.og() + o) * s;
                y_part[at..at + s].copy_from_slice(src);
            }
        }
    }
}

/// A zeroed output of `per_image` values per image, filled by `f(first
/// image, this group's part of the output, scratch, threaded gemm)` for each
/// group of `group_len` images: groups in parallel when there are enough of
/// them (single-threaded GEMMs), else in turn with threaded GEMMs.
fn for_groups(
    d: &Dims,
    per_image: usize,
    f: impl Fn(usize, &mut [f32], &mut Scratch, bool) + Sync,
) -> Vec<f32> {
    let (len, n) = (group_len(d), d.n * per_image);
    if d.parallel_images() {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
        }
        super::zeroed_chunks(n, len * per_image, |k, part| {
            SCRATCH.with(|ws| f(k * len, part, &mut ws.borrow_mut(), false))
        })
    } else {
        let (mut out, mut ws) = (vec![0.0f32; n], Scratch::default());
        for (k, part) in out.chunks_mut(len * per_image).enumerate() {
            f(k * len, part, &mut ws, true);
        }
        out
    }
}

pub fn conv2d(x: &Value, w: &Value, g: &ConvGeom, y_shape: &[usize]) -> Value {
    let d = Dims::new(&x.layout.shape, &w.layout.shape, y_shape, g);
    let (xd, wd) = (f32_data(x), f32_data(w));
    let (img_in, img_out) = (d.c * d.h * d.w, d.o * d.spatial());
    if img_out == 0 || d.n == 0 || img_in == 0 {
        return Value::f32(vec![0.0; crate::shape::numel(y_shape)], y_shape);
    }
    let rows = d.col_rows();
    let y = for_groups(&d, img_out, |first, y_part, ws, threads| {
        let images = y_part.len() / img_out;
        for part in Part::each_group(&d, first, images) {
            let group = part.group;
            let (b, b_rs) = part.unfold(&xd, &mut ws.col);
            let cols = part.columns();
            // One image writes its rows of y in place; a group goes through `rows`.
            let dst = if images == 1 {
                y_part[group * d.og() * d.spatial()..].as_mut_ptr()
            } else {
                ws.rows.resize(d.og() * cols, 0.0);
                ws.rows.as_mut_ptr()
            };
            // y_g[og, cols] = w_g[og, rows] @ col[rows, cols]
            unsafe {
                gemm_strided(
                    d.og(),
                    cols,
                    rows,
                    wd.as_ptr().add(group * d.og() * rows),
                    rows as isize,
                    1,
                    b,
                    b_rs as isize,
                    1,
                    dst,
                    false,
                    threads,
                );
            }
            if images > 1 {
                part.scatter_out(&ws.rows, y_part);
            }
        }
    });
    Value::f32(y, y_shape)
}

/// dx from (dy, w): `col = w_g^T @ dy_g`, then col2im.
pub fn conv2d_backward_data(dy: &Value, w: &Value, g: &ConvGeom, x_shape: &[usize]) -> Value {
    let d = Dims::new(x_shape, &w.layout.shape, &dy.layout.shape, g);
    let (dyd, wd) = (f32_data(dy), f32_data(w));
    let n = crate::shape::numel(x_shape);
    let (img_in, img_out) = (d.c * d.h * d.w, d.o * d.spatial());
    if n == 0 || img_out == 0 {
        return Value::f32(vec![0.0; n], x_shape);
    }
    let rows = d.col_rows();
    let dx = for_groups(&d, img_in, |first, dx_part, ws, threads| {
        let images = dx_part.len() / img_in;
        for part in Part::each_group(&d, first, images) {
            let group = part.group;
            let (b, b_rs) = part.gather_out(&dyd, &mut ws.rows);
            let cols = part.columns();
            let pointwise = is_pointwise(&d);
            let dst = if pointwise {
                // col is exactly this group's slice of dx (one image).
                dx_part[group * d.cg() * d.h * d.w..].as_mut_ptr()
            } else {
                ws.col.resize(rows * cols, 0.0);
                ws.col.as_mut_ptr()
            };
            // col[rows, cols] = w_g^T[rows, og] @ dy_g[og, cols]
            unsafe {
                gemm_strided(
                    rows,
                    cols,
                    d.og(),
                    wd.as_ptr().add(group * d.og() * rows),
                    1,
                    rows as isize,
                    b,
                    b_rs as isize,
                    1,
                    dst,
                    false,
                    threads,
                );
            }
            if !pointwise {
                for (i, dx_img) in dx_part.chunks_exact_mut(img_in).enumerate() {
                    col2im(&ws.col[i * d.spatial()..], &d, group * d.cg(), dx_img, cols);
                }
            }
        }
    });
    Value::f32(dx, x_shape)
}

/// Whether the filter gradient is better multiplied as dw^T with dy
/// transposed first. The gemm crate multiplies into column-major outputs,
/// so for dw (row-major) its left operand is the im2col matrix, contiguous
/// along the reduction, which it packs transposed; into dw^T, its left
/// operand is dy^T (a copy of og x columns, small), contiguous along og,
/// and needs no packing. Measured here (2 threads, AVX-512, batch 32):
/// ResNet-18's layer1 39 -> 15.7 ms, layer2 16.2 -> 12.7, layer2.down
/// 9.2 -> 7.7; but filters of under 64 rows (3-channel stems: 1.5 -> 3.6
/// ms) and 256 or more output channels (layer4: 14.8 -> 36.6, the DCGAN's
/// 128->256: 6.9 -> 9.6) are faster as they were.
fn filter_from_transposed_dy(d: &Dims) -> bool {
    d.col_rows() >= 64 && d.og() <= 128
}

/// dw from (x, dy): `dw_g += dy_g @ col^T`, summed over images.
pub fn conv2d_backward_filter(x: &Value, dy: &Value, g: &ConvGeom, w_shape: &[usize]) -> Value {
    let d = Dims::new(&x.layout.shape, w_shape, &dy.layout.shape, g);
    let (xd, dyd) = (f32_data(x), f32_data(dy));
    let wlen = crate::shape::numel(w_shape);
    let img_out = d.o * d.spatial();
    if wlen == 0 || img_out == 0 || d.n == 0 {
        return Value::f32(vec![0.0; wlen], w_shape);
    }
    let rows = d.col_rows();
    let len = group_len(&d);
    // dw over images [start, end), in groups of `len`.
    let images = |start: usize, end: usize, threads: bool| {
        let (og, mut ws) = (d.og(), Scratch::default());
        // dw_g[og, rows] += dy_g[og, cols] @ col^T[cols, rows], into dw or,
        // transposed, into `dw_t` (see `filter_from_transposed_dy`).
        let transposed = filter_from_transposed_dy(&d);
        let mut dw = vec![0.0f32; wlen];
        let mut dw_t = vec![0.0f32; if transposed { wlen } else { 0 }];
        for first in (start..end).step_by(len) {
            for part in Part::each_group(&d, first, len.min(end - first)) {
                let at = part.group * og * rows;
                let (b, b_rs) = part.unfold(&xd, &mut ws.col);
                let col_t = (b, 1, b_rs as isize);
                unsafe {
                    if transposed {
                        part.gather_out_transposed(&dyd, &mut ws.rows);
                        let dy_t = (ws.rows.as_ptr(), 1, og as isize);
                        let dst = (dw_t.as_mut_ptr().add(at), 1, og as isize);
                        gemm_into(og, rows, part.columns(), dy_t, col_t, dst, true, threads);
                    } else {
                        let (a, a_rs) = part.gather_out(&dyd, &mut ws.rows);
                        let dst = (dw.as_mut_ptr().add(at), rows as isize, 1);
                        gemm_into(
                            og,
                            rows,
                            part.columns(),
                            (a, a_rs as isize, 1),
                            col_t,
                            dst,
                            true,
                            threads,
                        );
                    }
                }
            }
        }
        if transposed {
            for (g_t, g) in dw_t
                .chunks_exact(og * rows)
                .zip(dw.chunks_exact_mut(og * rows))
            {
                for (r, row) in g_t.chunks_exact(og).enumerate() {
                    for (o, v) in row.iter().enumerate() {
                        g[o * rows + r] = *v;
                    }
                }
            }
        }
        dw
    };
    let dw = if d.parallel_images() {
        let chunk = d.n.div_ceil(rayon::current_num_threads());
        (0..d.n.div_ceil(chunk))
            .into_par_iter()
            .map(|k| images(k * chunk, ((k + 1) * chunk).min(d.n), false))
            .collect::<Vec<_>>()
            .into_iter()
            // Summed in chunk order, so results do not depend on thread scheduling.
            .reduce(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            })
            .unwrap_or_else(|| vec![0.0; wlen])
    } else {
        images(0, d.n, true)
    };
    Value::f32(dw, w_shape)
}

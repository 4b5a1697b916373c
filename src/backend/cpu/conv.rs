//! 2-D convolution and its two backward passes as im2col + GEMM, images in
//! parallel (each thread runs its own single-threaded GEMM).

use rayon::prelude::*;

use super::f32_data;
use super::matmul::gemm_strided;
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

/// Unfold channels `[c0, c0+cg)` of one image into `col[cg*kh*kw, oh*ow]`.
fn im2col(x_img: &[f32], d: &Dims, c0: usize, col: &mut [f32]) {
    let (sh, sw) = d.g.stride;
    let (ph, pw) = d.g.padding;
    let (dh, dw) = d.g.dilation;
    for c in 0..d.cg() {
        let plane = &x_img[(c0 + c) * d.h * d.w..(c0 + c + 1) * d.h * d.w];
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = ((c * d.kh + ki) * d.kw + kj) * d.spatial();
                let dst = &mut col[row..row + d.spatial()];
                for oi in 0..d.oh {
                    let ih = Dims::src(oi, ki, sh, ph, dh);
                    let line = &mut dst[oi * d.ow..(oi + 1) * d.ow];
                    if ih < 0 || ih >= d.h as isize {
                        line.fill(0.0);
                        continue;
                    }
                    let src_row = &plane[ih as usize * d.w..(ih as usize + 1) * d.w];
                    // Only [lo, hi) reads inside the row; with stride 1 it is one slice copy.
                    let (lo, hi) = d.valid_cols(kj);
                    line[..lo].fill(0.0);
                    line[hi..].fill(0.0);
                    if lo < hi {
                        let first = Dims::src(lo, kj, sw, pw, dw) as usize;
                        if sw == 1 {
                            line[lo..hi].copy_from_slice(&src_row[first..first + (hi - lo)]);
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
}

/// Fold `col` back, adding into channels `[c0, c0+cg)` of one image (adjoint of im2col).
fn col2im(col: &[f32], d: &Dims, c0: usize, x_img: &mut [f32]) {
    let (sh, sw) = d.g.stride;
    let (ph, pw) = d.g.padding;
    let (dh, dw) = d.g.dilation;
    for c in 0..d.cg() {
        let plane = &mut x_img[(c0 + c) * d.h * d.w..(c0 + c + 1) * d.h * d.w];
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = ((c * d.kh + ki) * d.kw + kj) * d.spatial();
                let src = &col[row..row + d.spatial()];
                for oi in 0..d.oh {
                    let ih = Dims::src(oi, ki, sh, ph, dh);
                    if ih < 0 || ih >= d.h as isize {
                        continue;
                    }
                    let dst_row = &mut plane[ih as usize * d.w..(ih as usize + 1) * d.w];
                    let (lo, hi) = d.valid_cols(kj);
                    if lo < hi {
                        let first = Dims::src(lo, kj, sw, pw, dw) as usize;
                        let line = &src[oi * d.ow + lo..oi * d.ow + hi];
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
}

/// The im2col matrix `[cg*kh*kw, oh*ow]` of group `gi` of one image: the
/// image itself for pointwise convolutions, else unfolded into `col`.
fn columns<'a>(x_img: &'a [f32], d: &Dims, gi: usize, col: &'a mut Vec<f32>) -> &'a [f32] {
    if is_pointwise(d) {
        return &x_img[gi * d.cg() * d.h * d.w..];
    }
    col.resize(d.col_rows() * d.spatial(), 0.0);
    im2col(x_img, d, gi * d.cg(), col);
    col
}

/// True when im2col would just copy the image (1x1, stride 1, no padding).
fn is_pointwise(d: &Dims) -> bool {
    d.kh == 1 && d.kw == 1 && d.g.stride == (1, 1) && d.g.padding == (0, 0)
}

pub fn conv2d(x: &Value, w: &Value, g: &ConvGeom, y_shape: &[usize]) -> Value {
    let d = Dims::new(&x.layout.shape, &w.layout.shape, y_shape, g);
    let (xd, wd) = (f32_data(x), f32_data(w));
    let mut y = vec![0.0f32; crate::shape::numel(y_shape)];
    let (img_in, img_out) = (d.c * d.h * d.w, d.o * d.spatial());
    if y.is_empty() || img_in == 0 {
        return Value::f32(y, y_shape);
    }
    let rows = d.col_rows();
    let one_image = |ni: usize, y_img: &mut [f32], col: &mut Vec<f32>, threads: bool| {
        let x_img = &xd[ni * img_in..(ni + 1) * img_in];
        for gi in 0..g.groups {
            let src = columns(x_img, &d, gi, col);
            // y_g[og, s] = w_g[og, rows] @ col[rows, s]
            unsafe {
                gemm_strided(
                    d.og(),
                    d.spatial(),
                    rows,
                    wd.as_ptr().add(gi * d.og() * rows),
                    rows as isize,
                    1,
                    src.as_ptr(),
                    d.spatial() as isize,
                    1,
                    y_img.as_mut_ptr().add(gi * d.og() * d.spatial()),
                    false,
                    threads,
                );
            }
        }
    };
    if d.parallel_images() {
        y.par_chunks_mut(img_out)
            .enumerate()
            .for_each_init(Vec::new, |col, (ni, y_img)| {
                one_image(ni, y_img, col, false)
            });
    } else {
        let mut col = Vec::new();
        for (ni, y_img) in y.chunks_mut(img_out).enumerate() {
            one_image(ni, y_img, &mut col, true);
        }
    }
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
    let one_image = |ni: usize, dx_img: &mut [f32], col: &mut Vec<f32>, threads: bool| {
        let dy_img = &dyd[ni * img_out..(ni + 1) * img_out];
        for gi in 0..g.groups {
            let pointwise = is_pointwise(&d);
            let dst: *mut f32 = if pointwise {
                // col is exactly this group's slice of dx.
                unsafe { dx_img.as_mut_ptr().add(gi * d.cg() * d.h * d.w) }
            } else {
                col.clear();
                col.resize(rows * d.spatial(), 0.0);
                col.as_mut_ptr()
            };
            // col[rows, s] = w_g^T[rows, og] @ dy_g[og, s]
            unsafe {
                gemm_strided(
                    rows,
                    d.spatial(),
                    d.og(),
                    wd.as_ptr().add(gi * d.og() * rows),
                    1,
                    rows as isize,
                    dy_img.as_ptr().add(gi * d.og() * d.spatial()),
                    d.spatial() as isize,
                    1,
                    dst,
                    pointwise,
                    threads,
                );
            }
            if !pointwise {
                col2im(col, &d, gi * d.cg(), dx_img);
            }
        }
    };
    let dx = if d.parallel_images() {
        thread_local! {
            static COL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        super::zeroed_chunks(n, img_in, |ni, dx_img| {
            COL.with(|col| one_image(ni, dx_img, &mut col.borrow_mut(), false))
        })
    } else {
        let mut dx = vec![0.0f32; n];
        let mut col = Vec::new();
        for (ni, dx_img) in dx.chunks_mut(img_in).enumerate() {
            one_image(ni, dx_img, &mut col, true);
        }
        dx
    };
    Value::f32(dx, x_shape)
}

/// dw from (x, dy): `dw_g += dy_g @ col^T`, summed over images.
pub fn conv2d_backward_filter(x: &Value, dy: &Value, g: &ConvGeom, w_shape: &[usize]) -> Value {
    let d = Dims::new(&x.layout.shape, w_shape, &dy.layout.shape, g);
    let (xd, dyd) = (f32_data(x), f32_data(dy));
    let wlen = crate::shape::numel(w_shape);
    let (img_in, img_out) = (d.c * d.h * d.w, d.o * d.spatial());
    if wlen == 0 || img_out == 0 || d.n == 0 {
        return Value::f32(vec![0.0; wlen], w_shape);
    }
    let rows = d.col_rows();
    let one_image = |ni: usize, dw: &mut [f32], col: &mut Vec<f32>, threads: bool| {
        let x_img = &xd[ni * img_in..(ni + 1) * img_in];
        let dy_img = &dyd[ni * img_out..(ni + 1) * img_out];
        for gi in 0..g.groups {
            let src = columns(x_img, &d, gi, col);
            // dw_g[og, rows] += dy_g[og, s] @ col^T[s, rows]
            unsafe {
                gemm_strided(
                    d.og(),
                    rows,
                    d.spatial(),
                    dy_img.as_ptr().add(gi * d.og() * d.spatial()),
                    d.spatial() as isize,
                    1,
                    src.as_ptr(),
                    1,
                    d.spatial() as isize,
                    dw.as_mut_ptr().add(gi * d.og() * rows),
                    true,
                    threads,
                );
            }
        }
    };
    let dw = if d.parallel_images() {
        let chunk = d.n.div_ceil(rayon::current_num_threads());
        (0..d.n)
            .into_par_iter()
            .chunks(chunk)
            .map(|images| {
                let (mut dw, mut col) = (vec![0.0f32; wlen], Vec::new());
                for ni in images {
                    one_image(ni, &mut dw, &mut col, false);
                }
                dw
            })
            .collect::<Vec<_>>()
            .into_iter()
            // Summed in chunk order, so results do not depend on thread scheduling.
            .reduce(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            })
            .unwrap_or_else(|| vec![0.0; wlen])
    } else {
        let (mut dw, mut col) = (vec![0.0f32; wlen], Vec::new());
        for ni in 0..d.n {
            one_image(ni, &mut dw, &mut col, true);
        }
        dw
    };
    Value::f32(dw, w_shape)
}

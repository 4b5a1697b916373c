//! Elementwise fusion: chains run as one pass, with the same numbers.

mod common;
use common::*;
use shadergrad::{default_device, last_realize_stats, RealizeStats};
use shadergrad::{Conv2dOpts, DType, Result, Tensor};

fn chain_is_one_kernel() -> Result<()> {
    let (a, b, c) = (rt(&[33, 7], 1), rt(&[33, 7], 2), rt(&[7], 3));
    let y = a.mul(&b)?.add(&c)?.relu();
    y.realize()?;
    let s = last_realize_stats();
    // mul, add (with the broadcast bias read in place), compare, where: one pass.
    assert_eq!(s.fused, 1, "{s:?}");
    assert!(s.inlined >= 3, "{s:?}");
    let (av, bv, cv) = (a.to_vec()?, b.to_vec()?, c.to_vec()?);
    let want: Vec<f32> = (0..33 * 7)
        .map(|i| (av[i] * bv[i] + cv[i % 7]).max(0.0))
        .collect();
    assert_close(&y.to_vec()?, &want, 1e-6, 1e-6);
    Ok(())
}

fn values_held_by_handles_are_not_inlined() -> Result<()> {
    let a = rt(&[5, 5], 4);
    let h = a.exp();
    let y = h.add_scalar(1.0).log();
    y.realize()?;
    // h is held by this function, so it was materialised and cached.
    assert!(h.is_realized());
    assert_close(
        &h.to_vec()?,
        &a.to_vec()?.iter().map(|v| v.exp()).collect::<Vec<_>>(),
        1e-6,
        1e-6,
    );
    Ok(())
}

fn fused_loss_matches_f64_reference() -> Result<()> {
    // Softmax cross-entropy over a permuted (transposed) operand, against f64.
    let logits = rt(&[4, 6], 5).t()?.mul_scalar(3.0);
    let classes = [1usize, 0, 3, 2, 3, 1];
    let labels = ti(&classes.map(|c| c as i32), &[6]);
    let loss = logits.cross_entropy(&labels, 0.0)?;
    let v = logits.to_vec()?;
    let mut want = 0.0f64;
    for (r, &l) in classes.iter().enumerate() {
        let row: Vec<f64> = (0..4).map(|c| v[r * 4 + c] as f64).collect();
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        want += m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - row[l];
    }
    assert_close(&[loss.item()?], &[(want / 6.0) as f32], 1e-5, 1e-5);
    // A label outside the classes is an error at realize time, not a panic.
    let bad = logits.cross_entropy(&ti(&[1, 0, 3, 2, 5, 1], &[6]), 0.0)?;
    assert!(bad.item().is_err());
    Ok(())
}

/// `conv -> bias -> relu -> max_pool` pools first and adds the bias and
/// applies relu to the pooled tensor (in the pooling's epilogue): the same
/// values, gradients within rounding, and no elementwise pass at all.
fn max_pool_runs_before_bias_and_relu() -> Result<()> {
    let (x, w, b) = (rt(&[2, 3, 9, 9], 1), rt(&[4, 3, 3, 3], 2), rt(&[4], 3));
    let (dy, opts) = (rt(&[2, 4, 3, 3], 4), Conv2dOpts::default());
    // leaky_relu(0) is relu written so that the rewrite does not match it.
    let layer = |relu: bool| -> Result<(Vec<f32>, RealizeStats, Vec<Vec<f32>>)> {
        let (x, w, b) = (x.with_grad(), w.with_grad(), b.with_grad());
        let h = x.conv2d(&w, Some(&b), opts)?;
        let h = if relu { h.relu() } else { h.leaky_relu(0.0) };
        let y = h.max_pool2d(2, 2, 0)?;
        y.realize()?;
        let stats = last_realize_stats();
        let g = y.mul(&dy)?.sum_all().backward()?;
        let grads = [&x, &w, &b].map(|t| g.get_or_zeros(t).to_vec());
        Ok((
            y.to_vec()?,
            stats,
            grads.into_iter().collect::<Result<_>>()?,
        ))
    };
    let (y, stats, grads) = layer(true)?;
    let (y_ref, stats_ref, grads_ref) = layer(false)?;
    assert_eq!(y, y_ref, "max commutes with relu and +bias exactly");
    assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0));
    // The pooling adds the bias and applies relu as it stores: no pass of
    // their own.
    assert_eq!(stats.fused_elements, 0, "{stats:?}");
    // One pass over the unpooled tensor, the leaky relu: the convolution
    // adds the bias as it stores `h` (held here, so stored).
    assert_eq!(stats_ref.fused_elements, 2 * 4 * 7 * 7, "{stats_ref:?}");
    for (g, g_ref) in grads.iter().zip(&grads_ref) {
        assert_close(g, g_ref, 1e-5, 1e-5);
        assert!(g.iter().any(|&v| v != 0.0));
    }
    Ok(())
}

/// One fused pass over leaves read every way at once: dense, a per-channel
/// broadcast, a permuted view, a sliced view (with an offset), a scalar;
/// 21,645 elements, so reads cross rows, blocks and thread chunks.
fn mixed_layouts_in_one_pass() -> Result<()> {
    let shape = [5, 37, 13, 9];
    let n: usize = shape.iter().product();
    let dense = rt(&shape, 1);
    let channel = rt(&[1, 37, 1, 1], 2);
    let permuted = rt(&[9, 13, 37, 5], 3).permute(&[3, 2, 1, 0])?;
    let sliced = rt(&[5, 40, 13, 9], 4).slice(1, 2, 39)?;
    let y = dense
        .mul(&channel)?
        .add(&permuted)?
        .mul(&sliced.relu())?
        .add_scalar(0.5)
        .exp();
    let got = y.to_vec()?;
    assert_eq!(last_realize_stats().fused, 1);
    let (d, c, p, q) = (
        dense.to_vec()?,
        channel.to_vec()?,
        rt(&[9, 13, 37, 5], 3).to_vec()?,
        rt(&[5, 40, 13, 9], 4).to_vec()?,
    );
    let want: Vec<f32> = (0..n)
        .map(|i| {
            let (w, h, ch, b) = (i % 9, i / 9 % 13, i / (9 * 13) % 37, i / (9 * 13 * 37));
            let perm = p[((w * 13 + h) * 37 + ch) * 5 + b] as f64;
            let sl = q[((b * 40 + ch + 2) * 13 + h) * 9 + w].max(0.0) as f64;
            ((d[i] as f64 * c[ch] as f64 + perm) * sl + 0.5).exp() as f32
        })
        .collect();
    assert_close(&got, &want, 1e-5, 1e-5);
    Ok(())
}

/// A reduction runs its input's elementwise program itself (one pass, the
/// input never stored), over long rows (a workgroup tree), short rows,
/// several non-adjacent axes of broadcast and permuted leaves, NaN and
/// empty axes, with the numbers of the unfused reduction.
fn reductions_take_their_inputs_program() -> Result<()> {
    let gpu = default_device().is_gpu();
    let x = rt(&[33, 257], 1);
    let (a, b) = (rt(&[10, 7], 2).t()?, rt(&[7, 10], 3));
    let (c, bias) = (rt(&[5, 6, 7], 4), rt(&[1, 6, 1], 5));
    let empty = rt(&[3, 0], 6);
    Tensor::realize_all(&[
        x.clone(),
        a.clone(),
        b.clone(),
        c.clone(),
        bias.clone(),
        empty.clone(),
    ])?;
    // (name, the elementwise input, the reduction of it)
    type Make<'a> = Box<dyn Fn() -> Result<Tensor> + 'a>;
    type Reduce = fn(&Tensor) -> Result<Tensor>;
    let cases: Vec<(&str, Make<'_>, Reduce)> = vec![
        ("exp sum, rows of 257", Box::new(|| Ok(x.exp())), |e| {
            e.sum(&[1], true)
        }),
        (
            "max of a product over a transposed leaf",
            Box::new(|| a.mul(&b)),
            |e| e.max(&[1], false),
        ),
        (
            "sum over axes 0 and 2 of a broadcast add",
            Box::new(|| Ok(c.add(&bias)?.square())),
            |e| e.sum(&[0, 2], true),
        ),
        (
            "max with NaN (log of negatives)",
            Box::new(|| Ok(b.log())),
            |e| e.max(&[0], true),
        ),
        (
            "sum over an empty axis",
            Box::new(|| Ok(empty.exp())),
            |e| e.sum(&[1], true),
        ),
    ];
    for (name, make, reduce) in &cases {
        let fused = reduce(&make()?)?;
        fused.realize()?;
        let stats = last_realize_stats();
        let got = fused.to_vec()?;
        // Unfused: the program's values held by a handle, so stored first.
        let values = make()?;
        values.realize()?;
        let want = reduce(&values)?.to_vec()?;
        assert_close(&got, &want, 1e-6, 1e-6);
        if !name.contains("empty") {
            assert_eq!(stats.fused, 1, "{name}: {stats:?}");
            if gpu {
                assert_eq!(stats.dispatches, 1, "{name}: {stats:?}");
            }
        }
    }
    // Against f64: one row of the exp-sum; NaN propagates through max.
    let xv = x.to_vec()?;
    let row: f64 = xv[..257].iter().map(|&v| (v as f64).exp()).sum();
    let sums = (cases[0].2)(&(cases[0].1)()?)?.to_vec()?;
    assert_close(&sums[..1], &[row as f32], 1e-5, 1e-5);
    let maxima = (cases[3].2)(&(cases[3].1)()?)?.to_vec()?;
    assert!(maxima.iter().any(|v| v.is_nan()), "{maxima:?}");
    assert_eq!((cases[4].2)(&(cases[4].1)()?)?.to_vec()?, vec![0.0; 3]);
    Ok(())
}

/// Work the graph repeats is done once and arithmetic on constants is done
/// on the host: log_softmax and argmax of the same logits share the row
/// maximum; a gradient's seed scaled by a mean costs nothing.
fn repeated_work_and_constants_cost_nothing() -> Result<()> {
    let logits = rt(&[6, 5], 4);
    logits.realize()?;
    let cost = |ts: &[Tensor]| -> Result<(usize, usize)> {
        Tensor::realize_all(ts)?;
        let s = last_realize_stats();
        Ok((s.kernels, s.dispatches))
    };
    let lp = || logits.log_softmax(-1);
    let am = || logits.argmax(-1, false);
    cost(&[am()?])?; // caches the class indices (an arange) on the device
    let (alone_lp, alone_am) = (cost(&[lp()?])?, cost(&[am()?])?);
    let (lp2, am2) = (lp()?, am()?);
    let together = cost(&[lp2.clone(), am2.clone()])?;
    // (`kernels` counts views too, which are shared as well.)
    assert!(together.0 < alone_lp.0 + alone_am.0, "{together:?}");
    if default_device().is_gpu() {
        assert_eq!(together.1, alone_lp.1 + alone_am.1 - 1, "one maximum saved");
    }
    assert_eq!(am2.to_vec_i32()?, am()?.to_vec_i32()?);
    assert_close(&lp2.to_vec()?, &lp()?.to_vec()?, 0.0, 0.0);

    let c = Tensor::full(&[4], 2.0).mul_scalar(3.0).neg().exp();
    c.realize()?;
    assert_eq!(last_realize_stats().dispatches, 0);
    assert_close(&c.to_vec()?, &[(-6.0f32).exp(); 4], 0.0, 0.0);
    let w = rt(&[8], 7).with_grad();
    let g = w.mean_all().neg().backward()?;
    assert_close(
        &g.get(&w).expect("a gradient").to_vec()?,
        &[-0.125; 8],
        0.0,
        0.0,
    );
    Ok(())
}

/// Casts and integer operands fuse: an accuracy count (argmax against
/// labels) and integer arithmetic feeding f32 math, with exact numbers.
fn integer_steps_fuse() -> Result<()> {
    let logits = rt(&[9, 4], 8);
    let labels = ti(&[0, 1, 2, 3, 0, 1, 2, 3, 0], &[9]);
    Tensor::realize_all(&[logits.clone(), labels.clone()])?;
    let count = || -> Result<Tensor> { Ok(logits.argmax(1, false)?.eq(&labels)?.sum_all()) };
    // Once to cache the class indices (an arange) on the device, then counted.
    count()?.realize()?;
    let correct = count()?;
    correct.realize()?;
    let stats = last_realize_stats();
    let v = logits.to_vec()?;
    let want = (0..9)
        .filter(|&r| {
            let row = &v[r * 4..r * 4 + 4];
            let best = (0..4).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            best as i32 == [0, 1, 2, 3, 0, 1, 2, 3, 0][r]
        })
        .count();
    assert_eq!(correct.item()?, want as f32);
    // The row maximum, then the first-maximum search and the comparison
    // and count, each a reduction of a fused program.
    assert_eq!(stats.fused, 2, "{stats:?}");
    if default_device().is_gpu() {
        assert_eq!(stats.dispatches, 3, "{stats:?}");
    }

    let (p, q) = (ti(&[3, -4, 7, 100_000], &[4]), ti(&[5, 6, -7, 3], &[4]));
    Tensor::realize_all(&[p.clone(), q.clone()])?;
    // (p + q) * p wraps in the last element, as i32 arithmetic does.
    let mixed = p.add(&q)?.mul(&p)?;
    let y = mixed.cast(DType::F32).mul_scalar(0.5);
    let picked = Tensor::where_(&y.gt_scalar(0.0), &mixed, &q)?;
    Tensor::realize_all(&[y.clone(), picked.clone()])?;
    let wrapped = 100_003i32.wrapping_mul(100_000);
    assert_eq!(y.to_vec()?, vec![12.0, -4.0, 0.0, wrapped as f32 * 0.5]);
    let last = if wrapped > 0 { wrapped } else { 3 };
    assert_eq!(picked.to_vec_i32()?, vec![24, 6, -7, last]);
    Ok(())
}

/// Views between elementwise steps do not cut a pass: a row's log-sum-exp
/// is computed inside the subtraction that broadcasts it, and a detached
/// product inside the exp that reads it.
fn views_are_read_through() -> Result<()> {
    let gpu = default_device().is_gpu();
    let (a, b) = (rt(&[33, 7], 1), rt(&[33, 7], 2));
    Tensor::realize_all(&[a.clone(), b.clone()])?;
    // a - log(sum(exp(a), rows)): the exp-sum, then one pass.
    let y = a.sub(&a.exp().sum(&[1], true)?.log())?;
    y.realize()?;
    let stats = last_realize_stats();
    if gpu {
        assert_eq!(stats.dispatches, 2, "{stats:?}");
    }
    let av = a.to_vec()?;
    let want: Vec<f32> = (0..33 * 7)
        .map(|i| {
            let row = &av[i / 7 * 7..i / 7 * 7 + 7];
            let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            (av[i] as f64 - lse) as f32
        })
        .collect();
    assert_close(&y.to_vec()?, &want, 1e-5, 1e-5);
    let z = a.mul(&b)?.detach().exp();
    z.realize()?;
    let stats = last_realize_stats();
    assert_eq!(stats.fused, 1, "{stats:?}");
    if gpu {
        assert_eq!(stats.dispatches, 1, "{stats:?}");
    }
    let bv = b.to_vec()?;
    let want: Vec<f32> = av.iter().zip(&bv).map(|(x, y)| (x * y).exp()).collect();
    assert_close(&z.to_vec()?, &want, 1e-6, 1e-6);
    Ok(())
}

/// A layer's `relu(x @ w^T + b)`, `x @ w^T + b`, `relu(conv(x) + b)` and
/// `relu(max_pool(x) + b)` are one kernel each: the GEMM adds the bias (and applies relu) as it
/// stores, with the same f32 operations as the fused pass it replaces, so
/// the values equal, bit for bit, those of the product stored first.
fn layers_add_bias_and_relu_as_the_gemm_stores() -> Result<()> {
    let gpu = default_device().is_gpu();
    let (x, w, b) = (rt(&[33, 20], 1), rt(&[7, 20], 2), rt(&[7], 3));
    let (xc, wc, bc) = (rt(&[2, 3, 9, 9], 4), rt(&[5, 3, 3, 3], 5), rt(&[5], 6));
    let bp = rt(&[3], 7);
    Tensor::realize_all(&[
        bp.clone(),
        x.clone(),
        w.clone(),
        b.clone(),
        xc.clone(),
        wc.clone(),
        bc.clone(),
    ])?;
    let opts = Conv2dOpts {
        stride: (2, 2),
        padding: (1, 1),
        ..Default::default()
    };
    // Each layer built from its product, stored first or not.
    type Layer<'a> = Box<dyn Fn(bool) -> Result<Tensor> + 'a>;
    let stored = |p: Tensor, first: bool| -> Result<Tensor> {
        if first {
            p.realize()?;
        }
        Ok(p)
    };
    let layers: [(&str, Layer); 4] = [
        (
            "linear relu",
            Box::new(|first| Ok(stored(x.matmul(&w.t()?)?, first)?.add(&b)?.relu())),
        ),
        (
            "linear",
            Box::new(|first| stored(x.matmul(&w.t()?)?, first)?.add(&b)),
        ),
        (
            "conv relu",
            Box::new(|first| {
                let p = stored(xc.conv2d(&wc, None, opts)?, first)?;
                Ok(p.add(&bc.reshape(&[1, 5, 1, 1])?)?.relu())
            }),
        ),
        (
            "max pool relu",
            Box::new(|first| {
                let p = stored(xc.max_pool2d(2, 2, 0)?, first)?;
                Ok(p.add(&bp.reshape(&[1, 3, 1, 1])?)?.relu())
            }),
        ),
    ];
    let bits =
        |t: &Tensor| -> Result<Vec<u32>> { Ok(t.to_vec()?.iter().map(|v| v.to_bits()).collect()) };
    for (name, layer) in layers {
        let y = layer(false)?;
        y.realize()?;
        let s = last_realize_stats();
        // No pass of its own for the bias, the product never stored (views
        // of the weight and bias count as kernels but cost nothing).
        assert_eq!(s.fused, 0, "{name}: {s:?}");
        assert!(s.inlined >= 1, "{name}: {s:?}");
        if gpu {
            assert_eq!(s.dispatches, 1, "{name}: {s:?}");
        }
        // The product stored first: a GEMM, then the fused pass.
        let want = layer(true)?;
        assert_eq!(bits(&y)?, bits(&want)?, "{name}");
        assert!(y.to_vec()?.iter().any(|&v| v > 0.0), "{name}: all zero");
    }
    Ok(())
}

backend_tests!(
    layers_add_bias_and_relu_as_the_gemm_stores,
    views_are_read_through,
    reductions_take_their_inputs_program,
    repeated_work_and_constants_cost_nothing,
    integer_steps_fuse,
    mixed_layouts_in_one_pass,
    max_pool_runs_before_bias_and_relu,
    chain_is_one_kernel,
    values_held_by_handles_are_not_inlined,
    fused_loss_matches_f64_reference
);

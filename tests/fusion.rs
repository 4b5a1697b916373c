//! Elementwise fusion: chains run as one pass, with the same numbers.

mod common;
use common::*;
use shadergrad::{last_realize_stats, RealizeStats};
use shadergrad::{Conv2dOpts, Result};

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
/// applies relu to the pooled tensor: the same values, gradients within
/// rounding, and elementwise work on a quarter of the elements.
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
    assert_eq!(stats.fused_elements, 2 * 4 * 3 * 3, "{stats:?}");
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

backend_tests!(
    mixed_layouts_in_one_pass,
    max_pool_runs_before_bias_and_relu,
    chain_is_one_kernel,
    values_held_by_handles_are_not_inlined,
    fused_loss_matches_f64_reference
);

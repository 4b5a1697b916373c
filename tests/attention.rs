//! The fused attention primitive against the unfused composition (matmul,
//! softmax, matmul), forward and backward, masks included, on both
//! backends; gradchecks; fully masked rows; grouped heads; strided views.

mod common;
use common::*;
use shadergrad::{AttentionOpts, Device, Result, Tensor};

/// The four mask settings: none, causal, key padding, both. The padding
/// mask hides a different tail of keys in each batch, never all of them.
fn mask_variants(batch: usize, keys: usize) -> Vec<(&'static str, AttentionOpts)> {
    let mut m = vec![1.0f32; batch * keys];
    for b in 0..batch {
        let kept = (keys - keys * b / (2 * batch)).max(1);
        for j in kept..keys {
            m[b * keys + j] = 0.0;
        }
    }
    let mask = t(&m, &[batch, keys]);
    vec![
        ("none", AttentionOpts::default()),
        (
            "causal",
            AttentionOpts {
                causal: true,
                ..Default::default()
            },
        ),
        ("key_mask", AttentionOpts::key_mask(&mask)),
        (
            "causal+key_mask",
            AttentionOpts {
                causal: true,
                key_mask: Some(mask.clone()),
                ..Default::default()
            },
        ),
    ]
}

/// Fused vs unfused: outputs, and the gradients of q, k and v for one
/// random upstream gradient.
#[allow(clippy::too_many_arguments)]
fn compare(
    what: &str,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    lq: usize,
    lk: usize,
    d: usize,
    opts: &AttentionOpts,
    backward: bool,
) -> Result<()> {
    // Scaled so that the softmax is far from uniform.
    let q = rt(&[batch, heads, lq, d], 1).mul_scalar(2.0);
    let k = rt(&[batch, kv_heads, lk, d], 2).mul_scalar(2.0);
    let v = rt(&[batch, kv_heads, lk, d], 3);
    let run = |fused: bool| -> Result<Vec<Vec<f32>>> {
        // The reference at the longest length is composed on the cpu
        // backend: the software GPU would spend minutes on its matmuls.
        let on = if fused || lq.max(lk) < 1000 {
            *q.device()
        } else {
            Device::Cpu
        };
        let (q, k, v) = (
            q.to(on).with_grad(),
            k.to(on).with_grad(),
            v.to(on).with_grad(),
        );
        let opts = AttentionOpts {
            key_mask: opts.key_mask.as_ref().map(|m| m.to(on)),
            ..opts.clone()
        };
        let opts = &opts;
        let out = if fused {
            Tensor::attention(&q, &k, &v, opts)?
        } else {
            Tensor::attention_unfused(&q, &k, &v, opts)?
        };
        let mut got = vec![out.to_vec()?];
        if backward {
            let dout = rt(out.shape(), 4).to(on);
            let g = out.backward_with(&dout)?;
            for x in [&q, &k, &v] {
                got.push(g.get_or_zeros(x).to_vec()?);
            }
        }
        Ok(got)
    };
    let (fused, unfused) = (run(true)?, run(false)?);
    for (i, (f, u)) in fused.iter().zip(&unfused).enumerate() {
        let name = ["out", "dq", "dk", "dv"][i];
        let scale = u.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1.0);
        for (j, (a, b)) in f.iter().zip(u).enumerate() {
            assert!(
                (a - b).abs() <= 2e-5 * scale * (lk.max(lq) as f32).sqrt() + 1e-3 * b.abs(),
                "{what} b{batch} h{heads}/{kv_heads} lq{lq} lk{lk} d{d}: {name}[{j}] fused {a} unfused {b}"
            );
        }
    }
    Ok(())
}

fn forward_and_backward_short() -> Result<()> {
    for &len in &[1, 7, 33] {
        for &d in &[16, 64, 128] {
            for (what, opts) in mask_variants(2, len) {
                compare(what, 2, 3, 3, len, len, d, &opts, true)?;
            }
        }
    }
    Ok(())
}

fn forward_and_backward_129() -> Result<()> {
    for &d in &[16, 64, 128] {
        for (what, opts) in mask_variants(2, 129) {
            compare(what, 2, 1, 1, 129, 129, d, &opts, true)?;
        }
    }
    Ok(())
}

fn forward_and_backward_1000() -> Result<()> {
    // The software GPU runs these kernels at well under 1 GFLOP/s: there,
    // both masks at dim 16 and 64 and the causal one at 128 (every mask
    // and dim meet at the shorter lengths).
    let everything = shadergrad::default_device() == Device::Cpu;
    for &d in &[16, 64, 128] {
        for (what, opts) in mask_variants(1, 1000) {
            let wanted = everything
                || (d <= 64 && what == "causal+key_mask")
                || (d == 128 && what == "causal");
            if wanted {
                compare(what, 1, 1, 1, 1000, 1000, d, &opts, true)?;
            }
        }
    }
    Ok(())
}

fn different_query_and_key_lengths() -> Result<()> {
    for (lq, lk) in [(7, 33), (33, 7), (1, 129), (70, 65)] {
        for (what, opts) in mask_variants(2, lk) {
            compare(what, 2, 2, 2, lq, lk, 24, &opts, true)?;
        }
    }
    Ok(())
}

fn grouped_and_multi_query_heads() -> Result<()> {
    for kv_heads in [1, 2] {
        for (what, opts) in mask_variants(2, 9) {
            compare(what, 2, 4, kv_heads, 9, 9, 8, &opts, true)?;
        }
    }
    Ok(())
}

fn value_dim_differs_from_head_dim() -> Result<()> {
    let q = rt(&[1, 2, 5, 8], 1);
    let k = rt(&[1, 2, 6, 8], 2);
    let v = rt(&[1, 2, 6, 3], 3);
    let opts = AttentionOpts::default();
    let f = Tensor::attention(&q, &k, &v, &opts)?;
    assert_eq!(f.shape(), &[1, 2, 5, 3]);
    assert_close(
        &f.to_vec()?,
        &Tensor::attention_unfused(&q, &k, &v, &opts)?.to_vec()?,
        1e-5,
        1e-4,
    );
    gradcheck(vec![q, k, v], |x| {
        Tensor::attention(&x[0], &x[1], &x[2], &opts)
    });
    Ok(())
}

/// Heads split from `[batch, seq, heads, dim]` by a permute are read in
/// place (strided), and give the same result as dense copies.
fn permuted_views() -> Result<()> {
    let (b, l, h, d) = (2, 11, 3, 16);
    let x = rt(&[b, l, h * 3 * d], 5);
    let split = |i: usize| -> Result<Tensor> {
        x.slice(-1, i * h * d, (i + 1) * h * d)?
            .reshape(&[b, l, h, d])?
            .permute(&[0, 2, 1, 3])
    };
    let (q, k, v) = (split(0)?, split(1)?, split(2)?);
    let opts = AttentionOpts {
        causal: true,
        ..Default::default()
    };
    let strided = Tensor::attention(&q, &k, &v, &opts)?.to_vec()?;
    let dense =
        Tensor::attention(&q.contiguous(), &k.contiguous(), &v.contiguous(), &opts)?.to_vec()?;
    let reference = Tensor::attention_unfused(&q, &k, &v, &opts)?.to_vec()?;
    assert_close(&strided, &dense, 1e-6, 1e-6);
    assert_close(&strided, &reference, 1e-5, 1e-4);
    // Gradients flow back through the views to the projection.
    let xg = x.with_grad();
    let split_g = |i: usize| -> Result<Tensor> {
        xg.slice(-1, i * h * d, (i + 1) * h * d)?
            .reshape(&[b, l, h, d])?
            .permute(&[0, 2, 1, 3])
    };
    let loss = |fused: bool| -> Result<Vec<f32>> {
        let (q, k, v) = (split_g(0)?, split_g(1)?, split_g(2)?);
        let o = if fused {
            Tensor::attention(&q, &k, &v, &opts)?
        } else {
            Tensor::attention_unfused(&q, &k, &v, &opts)?
        };
        let w = rt(o.shape(), 9);
        o.mul(&w)?.sum_all().backward()?.get_or_zeros(&xg).to_vec()
    };
    assert_close(&loss(true)?, &loss(false)?, 1e-5, 1e-3);
    Ok(())
}

/// A query with no visible key: a zero output row and zero gradients,
/// while the other batch is unaffected.
fn fully_masked_rows() -> Result<()> {
    let (lq, lk, d) = (5, 7, 16);
    let mut m = vec![1.0f32; 2 * lk];
    m[lk..].fill(0.0);
    m[2] = 0.0;
    let mask = t(&m, &[2, lk]);
    let opts = AttentionOpts::key_mask(&mask);
    let q = rt(&[2, 2, lq, d], 1).with_grad();
    let k = rt(&[2, 2, lk, d], 2).with_grad();
    let v = rt(&[2, 2, lk, d], 3).with_grad();
    let out = Tensor::attention(&q, &k, &v, &opts)?;
    let o = out.to_vec()?;
    let half = o.len() / 2;
    assert!(o[half..].iter().all(|&x| x == 0.0), "batch 1 sees no key");
    assert!(o.iter().all(|x| x.is_finite()));
    let reference = Tensor::attention_unfused(&q, &k, &v, &opts)?.to_vec()?;
    assert_close(&o, &reference, 1e-5, 1e-4);
    let g = out.backward_with(&rt(out.shape(), 4))?;
    for x in [&q, &k, &v] {
        let gx = g.get_or_zeros(x).to_vec()?;
        let half = gx.len() / 2;
        assert!(
            gx[half..].iter().all(|&x| x == 0.0),
            "no gradient through batch 1"
        );
        assert!(gx[..half].iter().any(|&x| x != 0.0));
        assert!(gx.iter().all(|x| x.is_finite()));
    }
    // Key 2 of batch 0 is hidden: it gets no gradient either.
    let dk = g.get_or_zeros(&k).to_vec()?;
    for h in 0..2 {
        let row = &dk[(h * lk + 2) * d..][..d];
        assert!(row.iter().all(|&x| x == 0.0));
    }
    Ok(())
}

/// Under a causal mask a query longer than the keys still sees key 0, and
/// an empty key set gives zero rows.
fn edge_lengths() -> Result<()> {
    let opts = AttentionOpts {
        causal: true,
        ..Default::default()
    };
    let q = rt(&[1, 1, 4, 8], 1);
    let k = rt(&[1, 1, 0, 8], 2);
    let v = rt(&[1, 1, 0, 8], 3);
    let out = Tensor::attention(&q, &k, &v, &opts)?;
    assert_tensor(&out, &[1, 1, 4, 8], &[0.0; 32]);
    let q0 = rt(&[1, 1, 0, 8], 1);
    let k1 = rt(&[1, 1, 3, 8], 2);
    let v1 = rt(&[1, 1, 3, 8], 3);
    assert!(Tensor::attention(&q0, &k1, &v1, &opts)?
        .to_vec()?
        .is_empty());
    // dk and dv of keys no query reads are zeros.
    let (qg, kg, vg) = (q0.with_grad(), k1.with_grad(), v1.with_grad());
    let out = Tensor::attention(&qg, &kg, &vg, &opts)?;
    let g = out.sum_all().backward()?;
    assert_eq!(g.get_or_zeros(&kg).to_vec()?, vec![0.0; 24]);
    assert_eq!(g.get_or_zeros(&vg).to_vec()?, vec![0.0; 24]);
    Ok(())
}

fn gradcheck_with_masks() -> Result<()> {
    let mask = t(&[1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[2, 4]);
    let opts = AttentionOpts {
        causal: true,
        key_mask: Some(mask),
        scale: Some(0.7),
    };
    let q = rt(&[2, 2, 3, 5], 1);
    let k = rt(&[2, 1, 4, 5], 2);
    let v = rt(&[2, 1, 4, 5], 3);
    gradcheck(vec![q, k, v], |x| {
        Tensor::attention(&x[0], &x[1], &x[2], &opts)
    });
    Ok(())
}

/// The fused forward's memory grows linearly with the sequence length;
/// the composition's, which stores the scores, quadratically.
fn memory_is_linear_in_sequence_length() -> Result<()> {
    let peak = |len: usize, fused: bool| -> Result<usize> {
        let q = rt(&[1, 2, len, 32], 1);
        let k = rt(&[1, 2, len, 32], 2);
        let v = rt(&[1, 2, len, 32], 3);
        Tensor::realize_all(&[q.clone(), k.clone(), v.clone()])?;
        let opts = AttentionOpts::default();
        let out = if fused {
            Tensor::attention(&q, &k, &v, &opts)?
        } else {
            Tensor::attention_unfused(&q, &k, &v, &opts)?
        };
        out.realize()?;
        Ok(shadergrad::last_realize_stats().peak_bytes)
    };
    let (f256, f1024) = (peak(256, true)?, peak(1024, true)?);
    let (u256, u1024) = (peak(256, false)?, peak(1024, false)?);
    // out [1, 2, len, 32] and lse [1, 2, len]: 33 floats per query and head.
    assert_eq!(f1024, 2 * 1024 * 33 * 4, "fused peak at 1024");
    assert_eq!(f1024, 4 * f256, "fused: 4x the length, 4x the memory");
    assert!(
        u1024 >= 12 * u256,
        "unfused grows quadratically: {u256} -> {u1024}"
    );
    assert!(u1024 > 8 * f1024, "unfused {u1024} vs fused {f1024}");
    Ok(())
}

fn bad_shapes_are_errors() -> Result<()> {
    let q = rt(&[1, 4, 5, 8], 1);
    let k = rt(&[1, 4, 6, 8], 2);
    let v = rt(&[1, 4, 6, 8], 3);
    let o = AttentionOpts::default();
    let msg = |r: Result<Tensor>| r.expect_err("must be refused").to_string();
    assert!(msg(Tensor::attention(&q.reshape(&[4, 5, 8])?, &k, &v, &o))
        .contains("[batch, heads, seq, head_dim]"));
    assert!(msg(Tensor::attention(&q, &rt(&[1, 4, 6, 7], 2), &v, &o)).contains("head dims differ"));
    assert!(msg(Tensor::attention(&q, &k, &rt(&[1, 4, 5, 8], 3), &o)).contains("share batch"));
    let k3 = rt(&[1, 3, 6, 8], 2);
    assert!(msg(Tensor::attention(&q, &k3, &rt(&[1, 3, 6, 8], 3), &o)).contains("must divide"));
    let bad_mask = AttentionOpts::key_mask(&rt(&[1, 5], 4));
    assert!(msg(Tensor::attention(&q, &k, &v, &bad_mask)).contains("[batch, keys] = [1, 6]"));
    let ints = Tensor::from_slice_i32(&[0; 240], &[1, 4, 6, 10])?;
    assert!(Tensor::attention(&q, &k, &ints, &o).is_err());
    // Second derivatives are refused with a pointer to the unfused form.
    let (qg, kg, vg) = (q.with_grad(), k.with_grad(), v.with_grad());
    let out = Tensor::attention(&qg, &kg, &vg, &o)?;
    let g = out.sum_all().backward()?;
    let dq = g.get_or_zeros(&qg);
    let err = dq.sum_all().backward().expect_err("no second derivative");
    assert!(err.to_string().contains("attention_unfused"), "{err}");
    Ok(())
}

backend_tests!(
    forward_and_backward_short,
    forward_and_backward_129,
    forward_and_backward_1000,
    different_query_and_key_lengths,
    grouped_and_multi_query_heads,
    value_dim_differs_from_head_dim,
    permuted_views,
    fully_masked_rows,
    edge_lengths,
    gradcheck_with_masks,
    bad_shapes_are_errors,
    memory_is_linear_in_sequence_length,
);

/// `shadergrad bench attention`'s entries on a tiny shape: both variants,
/// both passes, and the fused one's smaller peak memory.
#[cfg(feature = "bench")]
#[test]
fn bench_attention_reports_both_variants() -> Result<()> {
    let results = shadergrad::bench::attention(
        &Device::Cpu,
        std::time::Duration::from_millis(1),
        &[[1, 2, 64, 8]],
    )?;
    let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "attention fused b1 h2 l64 d8 forward",
            "attention fused b1 h2 l64 d8 forward+backward",
            "attention unfused b1 h2 l64 d8 forward",
            "attention unfused b1 h2 l64 d8 forward+backward",
        ]
    );
    assert!(results
        .iter()
        .all(|r| r.median_s > 0.0 && r.gflops.is_some_and(|g| g > 0.0)));
    let peak = |i: usize| results[i].peak_bytes.expect("measured");
    assert!(peak(0) < peak(2) && peak(1) < peak(3), "{results:?}");
    Ok(())
}

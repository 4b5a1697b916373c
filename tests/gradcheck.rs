//! Finite-difference gradient checks for every primitive and composite op,
//! plus the semantics of accumulation, detach and no_grad.

mod common;
use common::*;
use shadergrad::{Conv2dOpts, Result, Tensor};

/// Values at least 0.05 apart (shuffled), so max/relu/abs kinks and ties
/// are never within the finite-difference step.
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let keys = data(n, seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut v = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        // k * 0.05 + 0.02: never 0, never on a round clamp bound.
        v[i] = (rank as f32 - (n / 2) as f32) * 0.05 + 0.02;
    }
    t(&v, shape)
}

fn positive(shape: &[usize], seed: u64) -> Tensor {
    rt(shape, seed).abs().add_scalar(0.5)
}

fn unary_ops() -> Result<()> {
    let x = rt(&[7], 1);
    gradcheck(vec![x.clone()], |v| Ok(v[0].neg()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].exp()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].sin()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].cos()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].tanh()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].erf()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].square()));
    let p = positive(&[7], 2);
    gradcheck(vec![p.clone()], |v| Ok(v[0].log()));
    gradcheck(vec![p.clone()], |v| Ok(v[0].sqrt()));
    gradcheck(vec![p.clone()], |v| Ok(v[0].recip()));
    gradcheck(vec![p.clone()], |v| Ok(v[0].pow_scalar(1.5)));
    let d = distinct(&[9], 3);
    gradcheck(vec![d.clone()], |v| Ok(v[0].abs()));
    gradcheck(vec![d.clone()], |v| v[0].clamp(-0.1, 0.1));
    Ok(())
}

fn binary_ops_broadcast() -> Result<()> {
    let a = rt(&[3, 4], 1);
    let row = positive(&[4], 2);
    let col = rt(&[3, 1], 3);
    gradcheck(vec![a.clone(), row.clone()], |v| v[0].add(&v[1]));
    gradcheck(vec![a.clone(), col.clone()], |v| v[0].sub(&v[1]));
    gradcheck(vec![a.clone(), col.clone()], |v| v[0].mul(&v[1]));
    gradcheck(vec![a.clone(), row.clone()], |v| v[0].div(&v[1]));
    gradcheck(vec![row.clone(), col.clone()], |v| v[1].mul(&v[0]));
    gradcheck(vec![positive(&[5], 4), rt(&[5], 5)], |v| v[0].pow(&v[1]));
    // reuse of one input: x*x + x
    gradcheck(vec![a.clone()], |v| v[0].mul(&v[0])?.add(&v[0]));
    let (p, q) = (distinct(&[2, 5], 6), distinct(&[2, 5], 7));
    gradcheck(vec![p.clone(), q.clone()], |v| v[0].maximum(&v[1]));
    gradcheck(vec![p.clone(), q.clone()], |v| v[0].minimum(&v[1]));
    Ok(())
}

fn where_op() -> Result<()> {
    let c = rt(&[6], 1).gt_scalar(0.0);
    gradcheck(vec![rt(&[6], 2), rt(&[1], 3)], move |v| {
        Tensor::where_(&c, &v[0], &v[1])
    });
    Ok(())
}

fn reductions() -> Result<()> {
    let x = rt(&[3, 4, 5], 1);
    gradcheck(vec![x.clone()], |v| v[0].sum(&[1], false));
    gradcheck(vec![x.clone()], |v| v[0].sum(&[0, 2], true));
    gradcheck(vec![x.clone()], |v| Ok(v[0].sum_all()));
    gradcheck(vec![x.clone()], |v| v[0].mean(&[-1], false));
    gradcheck(vec![x.clone()], |v| v[0].var(&[1], false));
    let d = distinct(&[3, 4, 5], 2);
    gradcheck(vec![d.clone()], |v| v[0].max(&[2], false));
    gradcheck(vec![d.clone()], |v| v[0].max(&[0, 1], true));
    gradcheck(vec![d.clone()], |v| v[0].min(&[1], false));
    Ok(())
}

fn tied_max_splits_gradient() -> Result<()> {
    let x = t(&[1.0, 3.0, 3.0], &[3]).with_grad();
    let g = x.max_all().backward()?;
    assert_tensor(g.get(&x).expect("grad"), &[3], &[0.0, 0.5, 0.5]);
    Ok(())
}

fn views() -> Result<()> {
    let x = rt(&[2, 3, 4], 1);
    gradcheck(vec![x.clone()], |v| v[0].reshape(&[6, 4]));
    gradcheck(vec![x.clone()], |v| v[0].permute(&[2, 0, 1]));
    gradcheck(vec![x.clone()], |v| {
        v[0].transpose(0, 2)?.contiguous().reshape(&[24])
    });
    gradcheck(vec![rt(&[3, 1], 2)], |v| v[0].expand(&[2, 3, 5]));
    gradcheck(vec![x.clone()], |v| v[0].slice(2, 1, 3));
    gradcheck(vec![x.clone()], |v| v[0].pad(&[(1, 0), (0, 2), (1, 1)]));
    gradcheck(vec![x.clone()], |v| v[0].flatten(1, 2)?.unsqueeze(0));
    gradcheck(vec![rt(&[2, 1, 3], 5)], |v| {
        v[0].squeeze(1)?.transpose(0, 1)
    });
    gradcheck(vec![rt(&[2, 3], 3), rt(&[1, 3], 4)], |v| {
        Tensor::cat(&[v[0].clone(), v[1].clone()], 0)
    });
    gradcheck(vec![rt(&[2, 3], 3), rt(&[2, 3], 4)], |v| {
        Tensor::stack(&[v[0].clone(), v[1].clone()], 2)
    });
    Ok(())
}

fn matmul() -> Result<()> {
    gradcheck(vec![rt(&[7, 3], 1), rt(&[3, 5], 2)], |v| v[0].matmul(&v[1]));
    gradcheck(vec![rt(&[2, 1, 3, 4], 3), rt(&[3, 4, 2], 4)], |v| {
        v[0].matmul(&v[1])
    });
    gradcheck(vec![rt(&[4, 3], 5), rt(&[4, 5], 6)], |v| {
        v[0].t()?.matmul(&v[1])
    });
    gradcheck(vec![rt(&[3], 7), rt(&[3, 2], 8)], |v| v[0].matmul(&v[1]));
    gradcheck(vec![rt(&[2, 3], 9), rt(&[4, 3], 10), rt(&[4], 11)], |v| {
        v[0].linear(&v[1], Some(&v[2]))
    });
    Ok(())
}

fn conv2d() -> Result<()> {
    let cases = [
        Conv2dOpts::default(),
        Conv2dOpts::default().stride(2).padding(1),
        Conv2dOpts::default().dilation(2).padding(2),
        Conv2dOpts::default().groups(2).padding(1),
    ];
    for (i, opts) in cases.into_iter().enumerate() {
        let x = rt(&[2, 4, 6, 5], i as u64);
        let w = rt(&[4, 4 / opts.groups, 3, 3], 10 + i as u64);
        let b = rt(&[4], 20 + i as u64);
        gradcheck(vec![x, w, b], move |v| {
            v[0].conv2d(&v[1], Some(&v[2]), opts)
        });
    }
    // 1x1 (the pointwise fast path)
    gradcheck(vec![rt(&[2, 3, 4, 4], 1), rt(&[5, 3, 1, 1], 2)], |v| {
        v[0].conv2d(&v[1], None, Conv2dOpts::default())
    });
    // 9 small images: the cpu backend runs several images per GEMM
    let grouped = [
        Conv2dOpts::default(),
        Conv2dOpts::default().stride(2).padding(1).groups(2),
    ];
    for (i, opts) in grouped.into_iter().enumerate() {
        let (x, w) = (
            rt(&[9, 2, 5, 5], 30 + i as u64),
            rt(&[4, 2 / opts.groups, 3, 3], 40),
        );
        gradcheck(vec![x, w], move |v| v[0].conv2d(&v[1], None, opts));
    }
    Ok(())
}

fn conv_transpose2d() -> Result<()> {
    let opts = Conv2dOpts::default().stride(2).padding(1);
    gradcheck(
        vec![rt(&[1, 4, 3, 3], 1), rt(&[4, 3, 3, 3], 2), rt(&[3], 3)],
        move |v| v[0].conv_transpose2d(&v[1], Some(&v[2]), opts, (1, 1)),
    );
    let grouped = Conv2dOpts::default().groups(2);
    gradcheck(vec![rt(&[2, 4, 3, 3], 4), rt(&[4, 1, 2, 2], 5)], move |v| {
        v[0].conv_transpose2d(&v[1], None, grouped, (0, 0))
    });
    Ok(())
}

/// The weight gradient (the backward-filter primitive) differentiated again:
/// checks that primitive's own gradient rule against finite differences.
fn conv_backward_filter_second_order() -> Result<()> {
    let opts = Conv2dOpts::default().stride(2).padding(1);
    let dy = rt(&[2, 3, 3, 3], 9);
    gradcheck(vec![rt(&[2, 2, 5, 5], 1), rt(&[3, 2, 3, 3], 2)], move |v| {
        let (x, w) = (v[0].with_grad(), v[1].with_grad());
        let g = x.conv2d(&w, None, opts)?.mul(&dy)?.sum_all().backward()?;
        Ok(g.get_or_zeros(&w))
    });
    Ok(())
}

fn pooling() -> Result<()> {
    let x = distinct(&[2, 3, 5, 5], 1);
    gradcheck(vec![x.clone()], |v| v[0].max_pool2d(2, 2, 0));
    gradcheck(vec![x.clone()], |v| v[0].max_pool2d(3, 2, 1));
    gradcheck(vec![x.clone()], |v| v[0].avg_pool2d(2, 2, 0));
    gradcheck(vec![x.clone()], |v| v[0].avg_pool2d(3, 1, 1));
    // average pooling's backward, differentiated again
    let dy = rt(&[2, 3, 2, 2], 5);
    gradcheck(vec![x.clone()], move |v| {
        let x = v[0].with_grad();
        let g = x
            .square()
            .avg_pool2d(2, 2, 0)?
            .mul(&dy)?
            .sum_all()
            .backward()?;
        Ok(g.get_or_zeros(&x))
    });
    Ok(())
}

fn gather_scatter() -> Result<()> {
    let idx = ti(&[2, 0, 1, 1, 0, 0], &[2, 3]);
    let i2 = idx.clone();
    gradcheck(vec![rt(&[2, 4], 1)], move |v| v[0].gather(1, &i2));
    let i3 = idx.clone();
    gradcheck(vec![rt(&[2, 3], 2), rt(&[2, 3], 3)], move |v| {
        v[0].scatter_add(1, &i3, &v[1])
    });
    let ids = ti(&[3, 1, 3, 0], &[2, 2]);
    gradcheck(vec![rt(&[4, 3], 4)], move |v| {
        Tensor::embedding(&v[0], &ids)
    });
    Ok(())
}

fn activations() -> Result<()> {
    let x = distinct(&[3, 5], 1).mul_scalar(4.0);
    gradcheck(vec![x.clone()], |v| Ok(v[0].relu()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].leaky_relu(0.1)));
    gradcheck(vec![x.clone()], |v| Ok(v[0].gelu()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].gelu_tanh()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].sigmoid()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].silu()));
    gradcheck(vec![x.clone()], |v| Ok(v[0].softplus()));
    gradcheck(vec![x.clone()], |v| v[0].softmax(1));
    gradcheck(vec![x.clone()], |v| v[0].softmax(0));
    gradcheck(vec![x.clone()], |v| v[0].log_softmax(-1));
    Ok(())
}

fn losses() -> Result<()> {
    let labels = ti(&[2, 0, 4], &[3]);
    let l2 = labels.clone();
    gradcheck(vec![rt(&[3, 5], 1)], move |v| v[0].cross_entropy(&l2, 0.0));
    gradcheck(vec![rt(&[3, 5], 1)], move |v| {
        v[0].cross_entropy(&labels, 0.2)
    });
    gradcheck(vec![rt(&[4], 2), rt(&[4], 3)], |v| v[0].mse_loss(&v[1]));
    let target = t(&[1.0, 0.0, 1.0, 0.0], &[4]);
    gradcheck(vec![rt(&[4], 4).mul_scalar(3.0)], move |v| {
        v[0].bce_with_logits(&target)
    });
    Ok(())
}

fn dropout() -> Result<()> {
    // Re-seeding inside makes every evaluation draw the same mask.
    gradcheck(vec![rt(&[50], 1)], |v| {
        shadergrad::manual_seed(42);
        v[0].dropout(0.3, true)
    });
    Ok(())
}

fn accumulation_detach_no_grad() -> Result<()> {
    let x = t(&[2.0, -1.0], &[2]).with_grad();
    // y = x*x + 3x used twice: d/dx sum(2y) = 2(2x + 3)
    let y = x.mul(&x)?.add(&x.mul_scalar(3.0))?;
    let g = y.add(&y)?.sum_all().backward()?;
    assert_tensor(g.get(&x).expect("grad"), &[2], &[14.0, 2.0]);
    // detach blocks: d/dx (x * detach(x)) = detach(x)
    let g = x.mul(&x.detach())?.sum_all().backward()?;
    assert_tensor(g.get(&x).expect("grad"), &[2], &[2.0, -1.0]);
    // no_grad: nothing built inside requires grad
    let z = shadergrad::no_grad(|| x.mul_scalar(2.0));
    assert!(!z.requires_grad());
    assert!(z.sum_all().backward().is_err());
    // comparisons and casts carry no gradient
    assert!(!x.gt_scalar(0.0).requires_grad());
    // a parameter the loss ignores gets zeros from grad()
    let unused = t(&[1.0], &[1]).with_grad();
    let gs = shadergrad::grad(&x.sum_all(), &[x.clone(), unused.clone()])?;
    assert_tensor(&gs[1], &[1], &[0.0]);
    // non-scalar loss needs backward_with
    assert!(x.mul_scalar(1.0).backward().is_err());
    let g = x.mul_scalar(3.0).backward_with(&t(&[1.0, 2.0], &[2]))?;
    assert_tensor(g.get(&x).expect("grad"), &[2], &[3.0, 6.0]);
    Ok(())
}

/// Max pooling's backward pass is linear in dy (a scatter to the argmax),
/// so it has a second derivative: the upstream gradient gathered at the
/// argmax. Here the pooled values feed the loss non-linearly, so dy
/// depends on x and that rule is exercised.
fn max_pool_second_derivative() -> Result<()> {
    let x = distinct(&[2, 3, 5, 5], 1);
    for (k, s, p, out) in [(2, 2, 0, 2), (3, 2, 1, 3)] {
        let w = rt(&[2, 3, out, out], 5);
        gradcheck(vec![x.clone()], move |v| {
            let x = v[0].with_grad();
            let pooled = x.exp().max_pool2d(k, s, p)?;
            let g = pooled.square().mul(&w)?.sum_all().backward()?;
            Ok(g.get_or_zeros(&x))
        });
    }
    Ok(())
}

/// The update kernels are differentiable in every input, each of their
/// outputs carrying a gradient (through their reference composition).
fn optimizer_updates() -> Result<()> {
    let (p, g, m) = (rt(&[3, 4], 1), rt(&[3, 4], 2), rt(&[3, 4], 3));
    let v = positive(&[3, 4], 4);
    let adam = shadergrad::optim::AdamStep {
        lr: 0.1,
        beta1: 0.8,
        beta2: 0.9,
        eps: 1e-3,
        weight_decay: 0.5,
        t: 3,
    };
    gradcheck(vec![p.clone(), g.clone(), m.clone(), v], move |x| {
        let outs = shadergrad::optim::adam_update(&x[0], &x[1], &x[2], &x[3], &adam)?;
        Tensor::stack(&outs, 0)
    });
    let sgd = shadergrad::optim::SgdStep {
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.5,
    };
    gradcheck(vec![p.clone(), g.clone(), m.clone()], move |x| {
        let (p2, v2) = shadergrad::optim::sgd_update(&x[0], &x[1], Some(&x[2]), &sgd)?;
        Tensor::stack(&[p2, v2.expect("momentum gives a velocity")], 0)
    });
    let plain = shadergrad::optim::SgdStep {
        momentum: 0.0,
        nesterov: false,
        ..sgd
    };
    gradcheck(vec![p, g], move |x| {
        Ok(shadergrad::optim::sgd_update(&x[0], &x[1], None, &plain)?.0)
    });
    Ok(())
}

backend_tests!(
    optimizer_updates,
    unary_ops,
    binary_ops_broadcast,
    where_op,
    reductions,
    tied_max_splits_gradient,
    views,
    matmul,
    conv2d,
    conv_transpose2d,
    conv_backward_filter_second_order,
    pooling,
    gather_scatter,
    activations,
    losses,
    dropout,
    accumulation_detach_no_grad,
    max_pool_second_derivative,
);

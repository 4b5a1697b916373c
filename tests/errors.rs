//! Bad input gives errors (never panics) whose messages name the op, the
//! shapes and a fix.

mod common;
use common::*;
use shadergrad::{Conv2dOpts, DType, Result, Tensor};

#[track_caller]
fn says(r: Result<Tensor>, parts: &[&str]) {
    let msg = match r {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    };
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should mention {p:?}");
    }
}

fn messages_name_op_shapes_and_fix() -> Result<()> {
    let a = rt(&[2, 3], 1);
    says(a.add(&rt(&[4], 2)), &["add", "[2, 3]", "[4]", "broadcast"]);
    says(
        a.matmul(&rt(&[2, 3], 2)),
        &["matmul", "[2, 3]", "inner sizes differ"],
    );
    says(a.reshape(&[5]), &["reshape", "[2, 3]", "[5]"]);
    says(a.sum(&[3], false), &["sum", "axis 3", "rank 2"]);
    says(a.add(&ti(&[1], &[1])), &["add", "f32", "i32", "cast"]);
    says(
        a.cast(DType::I32).exp().gather(0, &a),
        &["gather", "i32", "cast"],
    );
    let x = rt(&[1, 3, 5, 5], 1);
    says(
        x.conv2d(&rt(&[4, 2, 3, 3], 2), None, Conv2dOpts::default()),
        &["conv2d", "[1, 3, 5, 5]", "[4, 2, 3, 3]", "input channels"],
    );
    says(
        x.conv2d(&rt(&[4, 3, 9, 9], 2), None, Conv2dOpts::default()),
        &["conv2d", "9x9", "padding"],
    );
    says(
        x.conv2d(&rt(&[4, 3, 3, 3], 2), None, Conv2dOpts::default().groups(0)),
        &["conv2d", "groups"],
    );
    says(x.max_pool2d(7, 1, 0), &["max_pool2d", "7x7", "5x5"]);
    says(x.avg_pool2d(2, 2, 2), &["avg_pool2d", "padding"]);
    says(
        Tensor::from_slice(&[1.0; 5], &[2, 3]),
        &["from_slice", "5 values", "[2, 3]"],
    );
    says(x.transpose(0, 9), &["transpose", "axis 9", "rank 4"]);
    says(a.dropout(1.5, true), &["dropout", "1.5"]);
    says(
        a.cross_entropy(&ti(&[0, 1, 2], &[3]), 0.0),
        &["cross_entropy", "[2, 3]", "[3]"],
    );
    let e = a.item().unwrap_err().to_string();
    assert!(e.contains("item") && e.contains("[2, 3]"), "{e}");
    let e = a.backward().unwrap_err().to_string();
    assert!(e.contains("backward") && e.contains("[2, 3]"), "{e}");
    Ok(())
}

/// Sizes that overflow, or that no memory holds, are errors naming the
/// op and the shape, never a panic or an aborted process.
fn overflowing_and_huge_sizes_are_errors() -> Result<()> {
    says(
        Tensor::arange(0.0, 1e30, 1.0),
        &["arange", "elements", "step"],
    );
    says(Tensor::arange_i32(0, 5, 0), &["arange_i32", "non-zero"]);
    // A shape whose element count overflows usize: lazy until realized.
    let huge = Tensor::zeros(&[1 << 40, 1 << 40]).add_scalar(1.0);
    let e = huge.realize().map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("[1099511627776, 1099511627776]") && e.contains("memory"),
        "{e}"
    );
    // A sum that counts them overflows nothing either.
    assert_eq!(huge.numel(), usize::MAX);
    // Representable, but more than this machine (or device) holds (random,
    // since arithmetic on a constant folds into a one-element constant).
    let big = Tensor::rand(&[1 << 22, 1 << 22]).add_scalar(1.0);
    let e = big.realize().map(|_| ()).unwrap_err();
    assert!(matches!(e, shadergrad::Error::OutOfMemory(_)), "{e}");
    assert!(e.to_string().contains("smaller batch"), "{e}");
    let a = rt(&[2, 3], 1);
    says(
        a.pad(&[(usize::MAX, 0), (0, 0)]),
        &["pad", "[2, 3]", "memory"],
    );
    says(a.reshape(&[usize::MAX, 2]), &["reshape", "[2, 3]"]);
    let x = rt(&[1, 3, 5, 5], 2);
    says(
        x.conv2d(
            &rt(&[4, 3, 3, 3], 3),
            None,
            Conv2dOpts::default().padding(usize::MAX / 2),
        ),
        &["conv2d", "padding"],
    );
    // After all that, ordinary work runs.
    assert_eq!(Tensor::ones(&[1000]).sum_all().item()?, 1000.0);
    Ok(())
}

/// Checks that used to be missing: the weight's type in a transposed
/// convolution, one_hot's class count.
fn dtype_and_count_checks() -> Result<()> {
    let x = rt(&[1, 2, 4, 4], 1);
    says(
        x.conv_transpose2d(
            &ti(&[0; 2 * 3 * 9], &[2, 3, 3, 3]),
            None,
            Conv2dOpts::default(),
            (0, 0),
        ),
        &["conv_transpose2d", "f32", "i32"],
    );
    let ids = ti(&[0, 2, 1], &[3]);
    says(Tensor::one_hot(&ids, 0), &["one_hot", "0 classes"]);
    says(
        Tensor::one_hot(&ids, usize::MAX),
        &["one_hot", "class count"],
    );
    assert_tensor(
        &Tensor::one_hot(&ids, 3)?,
        &[3, 3],
        &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0],
    );
    Ok(())
}

backend_tests!(
    messages_name_op_shapes_and_fix,
    overflowing_and_huge_sizes_are_errors,
    dtype_and_count_checks
);

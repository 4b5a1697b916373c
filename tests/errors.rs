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

backend_tests!(messages_name_op_shapes_and_fix);

//! Time spent per op kind, when `SHADERGRAD_PROFILE` is set
//! (`SHADERGRAD_PROFILE=shapes`: per op kind and output shape).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::op::Op;

static TABLE: Mutex<Option<HashMap<String, (usize, Duration)>>> = Mutex::new(None);

pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SHADERGRAD_PROFILE").is_some())
}

/// Rows split by output shape as well as op kind.
pub(crate) fn by_shape() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("SHADERGRAD_PROFILE").is_ok_and(|v| v == "shapes"))
}

pub(crate) fn key(op: &Op) -> String {
    match op {
        Op::Unary(u) => format!("unary {u:?}"),
        Op::Binary(b) => format!("binary {b:?}"),
        Op::Reduce { op, .. } => format!("reduce {op:?}"),
        o => o.name().to_string(),
    }
}

pub(crate) fn record_name(name: &str, d: Duration) {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let e = t
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_default();
    e.0 += 1;
    e.1 += d;
}

/// A table of calls and time per op kind, largest first (empty when off).
pub fn report() -> String {
    let t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(map) = t.as_ref() else {
        return String::new();
    };
    let mut rows: Vec<_> = map.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
    let total: Duration = rows.iter().map(|r| r.1 .1).sum();
    let mut s = format!("{:<44} {:>9} {:>10} {:>6}\n", "op", "calls", "ms", "%");
    for (k, (n, d)) in rows {
        s += &format!(
            "{k:<44} {n:>9} {:>10.1} {:>6.1}\n",
            d.as_secs_f64() * 1e3,
            100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-12)
        );
    }
    s
}

//! The benchmark harness on tiny shapes, once per backend: every entry of
//! `shadergrad bench` runs and has its figures, and the JSON report keeps
//! the schema that `--compare` and the peers' scripts rely on.
#![cfg(feature = "bench")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use shadergrad::bench::{self, Report};
use shadergrad::Result;

/// The JSON fields of a report and of an entry: a rename or a removal
/// breaks readers of earlier files and the peers' writers, so it must be
/// a new `bench::SCHEMA`, and this list changes with it.
const REPORT_FIELDS: [&str; 6] = ["device", "entries", "peak", "schema", "timing", "tool"];
const ENTRY_FIELDS: [&str; 17] = [
    "dispatches",
    "dtype",
    "fraction_of_peak",
    "gbs",
    "gflops",
    "group",
    "host_us_per_dispatch",
    "median_s",
    "name",
    "p10_s",
    "p90_s",
    "peak_bytes",
    "pool_bytes",
    "samples",
    "shape",
    "submits",
    "waits",
];

fn tiny_report() -> Result<Report> {
    let mut opts = bench::Options::new(shadergrad::default_device(), Duration::from_millis(1));
    opts.tiny = true;
    let mut seen = Vec::new();
    let report = bench::run(&opts, |r| {
        seen.push(r.entries.len());
        Ok(())
    })?;
    // The callback sees the header, then each entry as it is measured.
    assert_eq!(seen, (0..=report.entries.len()).collect::<Vec<_>>());
    Ok(report)
}

fn every_entry_is_measured() -> Result<()> {
    let report = tiny_report()?;
    let gpu = shadergrad::default_device().is_gpu();
    assert_eq!(report.schema, bench::SCHEMA);
    assert!(report.peak.fma_gflops > 0.0 && report.peak.copy_gbs > 0.0);
    let groups: BTreeSet<&str> = report.entries.iter().map(|e| e.group.as_str()).collect();
    assert_eq!(groups, bench::GROUPS.into_iter().collect(), "{report:#?}");
    for name in [
        "matmul 33x33x33",
        "matmul batched 2x8x8x8",
        "conv seed-cnn conv1 3->32 32x32 b1 backward-filter",
        "conv resnet18 layer2.down 64->128 32x32 s2 b1 forward",
        "elementwise fused relu(a*b+c) 1000",
        "reduce sum rows 30x33",
        "attention fused b1 h2 l16 d8 forward+backward",
        "step seed-cnn b2",
        "step dcgan w4 b2",
    ] {
        assert!(
            report.entries.iter().any(|e| e.name == name),
            "no entry {name:?}"
        );
    }
    for e in &report.entries {
        let what = format!("{} on {}", e.name, report.device.name);
        assert!(e.median_s > 0.0 && e.median_s.is_finite(), "{what}: {e:?}");
        assert!(e.p10_s <= e.median_s && e.median_s <= e.p90_s, "{what}");
        assert!(e.samples >= 3, "{what}");
        assert!(!e.shape.is_empty(), "{what}");
        let rate = e.gflops.or(e.gbs);
        if e.group == "step" {
            assert!(rate.is_none(), "{what}");
        } else {
            assert!(rate.is_some_and(|r| r > 0.0), "{what}");
            assert!(e.fraction_of_peak.is_some_and(|f| f > 0.0), "{what}");
        }
        if gpu {
            assert!(e.dispatches.is_some_and(|d| d > 0), "{what}");
            assert!(e.host_us_per_dispatch.is_some_and(|h| h > 0.0), "{what}");
        } else {
            assert!(e.dispatches.is_none(), "{what}");
        }
    }
    let step = |name: &str| {
        report
            .entries
            .iter()
            .find(|e| e.name == name)
            .cloned()
            .expect("step")
    };
    if gpu {
        // The step's realize submits once; the GAN's two realizes twice.
        assert_eq!(step("step seed-cnn b2").submits, Some(1));
        assert_eq!(step("step dcgan w4 b2").submits, Some(2));
        // The seed step reads its loss, its accuracy count and the loss
        // gather's index-error flag back together: one wait.
        assert_eq!(step("step seed-cnn b2").waits, Some(1));
        assert!(step("step dcgan w4 b2").pool_bytes.is_some_and(|b| b > 0));
    }
    assert!(step("step seed-cnn b2").peak_bytes.is_some_and(|p| p > 0));
    Ok(())
}

fn the_json_report_keeps_its_schema() -> Result<()> {
    let report = tiny_report()?;
    let dir = std::env::temp_dir().join(format!("sg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{}.json", report.device.name.replace(':', "-")));
    bench::save(&report, &path)?;
    assert_eq!(bench::load(&path)?, report);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("written")).expect("JSON");
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object().expect("object").keys().cloned().collect()
    };
    let want =
        |fields: &[&str]| -> BTreeSet<String> { fields.iter().map(|f| f.to_string()).collect() };
    assert_eq!(keys(&json), want(&REPORT_FIELDS));
    for e in json["entries"].as_array().expect("entries") {
        assert_eq!(keys(e), want(&ENTRY_FIELDS), "{e}");
    }
    assert_eq!(
        keys(&json["device"]),
        want(&[
            "adapter",
            "backend",
            "device_type",
            "driver",
            "name",
            "threads"
        ])
    );
    assert_eq!(keys(&json["peak"]), want(&["copy_gbs", "fma_gflops"]));

    // --compare: ratios by name, a dash where the other file has no entry.
    let mut theirs = report.clone();
    theirs.tool = "peer".into();
    theirs.entries.truncate(1);
    theirs.entries[0].median_s = report.entries[0].median_s * 2.0;
    let row = bench::table_row(&report.entries[0], Some(&theirs));
    assert!(row.trim_end().ends_with("2.00x"), "{row}");
    let row = bench::table_row(&report.entries[1], Some(&theirs));
    assert!(row.trim_end().ends_with('-'), "{row}");
    assert!(bench::table_header(&report, Some(&theirs)).contains("ratio"));

    // Another schema version, or not a report at all, is a clear error.
    let mut json = json;
    json["schema"] = serde_json::json!(bench::SCHEMA + 1);
    std::fs::write(&path, json.to_string()).expect("write");
    let err = bench::load(&path).expect_err("newer schema").to_string();
    assert!(err.contains("schema"), "{err}");
    std::fs::write(&path, "{\"name\": 1}").expect("write");
    let err = bench::load(&path).expect_err("not a report").to_string();
    assert!(err.contains("not a benchmark report"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// A filter that names nothing is an error listing what can be named.
#[test]
fn an_unknown_filter_is_an_error() {
    let mut opts = bench::Options::new(shadergrad::Device::Cpu, Duration::from_millis(1));
    opts.tiny = true;
    opts.filters = vec!["matmull".into()];
    let err = bench::run(&opts, |_| Ok(()))
        .expect_err("unknown")
        .to_string();
    assert!(
        err.contains("matmull") && err.contains("attention"),
        "{err}"
    );
    opts.filters = vec!["resnet18".into()];
    let report = bench::run(&opts, |_| Ok(())).expect("runs");
    assert!(!report.entries.is_empty());
    assert!(report.entries.iter().all(|e| e.name.contains("resnet18")));
}

backend_tests!(every_entry_is_measured, the_json_report_keeps_its_schema);

//! The wgpu backend's sources checked without a device: every shader file
//! and every kind of emitted kernel validates with naga and translates
//! through its SPIR-V, Metal and HLSL back ends, and every kernel's
//! parameter struct has the layout of its WGSL twin. Then one check with a
//! device: a kernel that fails to compile is a named error.

use super::kernels::{
    attention, copy, elementwise, fill, gemm, index, optim, pool2d, probe, reduce, texture,
};
use super::pipeline::{layout_mismatch, validate_wgsl, KernelParams, Shader};
use crate::op::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::schedule::fusion::{Instr, Program};
use crate::shape::Layout;
use crate::DType;

#[track_caller]
fn validate(name: &str, src: &str) {
    validate_with(name, src, Default::default());
}

/// Validate with the capabilities the source may use (subgroups), and no more.
#[track_caller]
fn validate_with(name: &str, src: &str, capabilities: naga::valid::Capabilities) {
    if let Err(e) = validate_wgsl(name, src, capabilities) {
        panic!("{e}");
    }
    translate(name, src);
}

/// The values our launchers give each override constant (gemm.wgsl's
/// `MODE` per `GemmMode`, gemm.wgsl's and pool2d.wgsl's `EPILOGUE`,
/// reduce.wgsl's `OP` and `INT_INPUT`). A shader
/// that declares an override missing here fails the translation test, so
/// a new one cannot go untranslated.
const OVERRIDE_VALUES: [(&str, &[f64]); 4] = [
    ("MODE", &[0.0, 1.0, 2.0, 3.0]),
    ("EPILOGUE", &[0.0, 1.0, 2.0]),
    ("OP", &[0.0, 1.0]),
    ("INT_INPUT", &[0.0, 1.0]),
];

/// Every entry point of `src`, specialised with every combination of its
/// overrides' values, through naga's SPIR-V, Metal and HLSL back ends: a
/// kernel that Vulkan, Metal or DX12 would reject fails here, on any
/// machine.
#[track_caller]
fn translate(name: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    assert!(!module.entry_points.is_empty(), "{name}: no entry point");
    let mut variants = vec![naga::back::PipelineConstants::default()];
    for (_, o) in module.overrides.iter() {
        let Some(o_name) = &o.name else { continue };
        let Some((_, values)) = OVERRIDE_VALUES.iter().find(|(n, _)| n == o_name) else {
            if o.init.is_some() {
                panic!("{name}: override {o_name} is not in OVERRIDE_VALUES; add the values its launcher sets");
            }
            continue;
        };
        variants = variants
            .into_iter()
            .flat_map(|v| {
                values.iter().map(move |&x| {
                    let mut v = v.clone();
                    v.insert(o_name.clone(), x);
                    v
                })
            })
            .collect();
    }
    for constants in &variants {
        translate_variant(name, &module, &info, constants);
    }
}

#[track_caller]
fn translate_variant(
    name: &str,
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    constants: &naga::back::PipelineConstants,
) {
    use naga::back::{hlsl, msl, spv};
    for ep in &module.entry_points {
        let at = format!("{name}, entry point {}, overrides {constants:?}", ep.name);
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            module,
            info,
            Some((ep.stage, &ep.name)),
            constants,
        )
        .unwrap_or_else(|e| panic!("{at}: overrides: {e}"));
        let spv_pipeline = spv::PipelineOptions {
            shader_stage: ep.stage,
            entry_point: ep.name.clone(),
        };
        spv::write_vec(
            &module,
            &info,
            &spv::Options::default(),
            Some(&spv_pipeline),
        )
        .unwrap_or_else(|e| panic!("{at}: SPIR-V: {e}"));
        let msl_options = msl::Options {
            lang_version: (2, 4),
            fake_missing_bindings: true,
            ..Default::default()
        };
        let msl_pipeline = msl::PipelineOptions {
            entry_point: Some((ep.stage, ep.name.clone())),
            ..Default::default()
        };
        msl::write_string(&module, &info, &msl_options, &msl_pipeline)
            .unwrap_or_else(|e| panic!("{at}: MSL: {e}"));
        let hlsl_options = hlsl::Options {
            shader_model: hlsl::ShaderModel::V6_2,
            fake_missing_bindings: true,
            ..Default::default()
        };
        let hlsl_pipeline = hlsl::PipelineOptions {
            entry_point: Some((ep.stage, ep.name.clone())),
        };
        let mut out = String::new();
        hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{at}: HLSL: {e}"));
    }
}

/// The translation check fails for a kernel that is valid WGSL but cannot
/// be specialised for a back end (an override without a default, which
/// our launchers would not set).
#[test]
#[should_panic(expected = "overrides")]
fn translation_catches_a_kernel_no_back_end_can_build() {
    let src = "override K: u32;\n@compute @workgroup_size(1) fn main() { var x = K; x += 1u; }";
    translate("override without a default", src);
}

#[test]
fn every_shader_file_validates_with_naga() {
    // Every file in shaders/ is compiled in and listed, so none escapes validation.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("shaders/ exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = Shader::ALL.iter().map(|s| s.file().to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "shaders/ and Shader::ALL differ");
    for s in Shader::ALL {
        validate_with(s.file(), s.source(), s.capabilities());
    }
}

#[track_caller]
fn same_layout<P: KernelParams>(source: &str) {
    if let Some(diff) = layout_mismatch::<P>(source) {
        panic!("{diff}");
    }
}

#[test]
fn parameter_structs_match_their_wgsl_structs() {
    same_layout::<copy::CopyParams>(Shader::Copy.source());
    same_layout::<fill::FillParams>(Shader::Fill.source());
    same_layout::<reduce::ReduceParams>(Shader::Reduce.source());
    same_layout::<gemm::GemmParams>(Shader::Gemm.source());
    same_layout::<pool2d::PoolParams>(Shader::Pool2d.source());
    same_layout::<index::IndexParams>(Shader::Index.source());
    same_layout::<optim::AdamParams>(Shader::Optim.source());
    same_layout::<optim::SgdParams>(Shader::Optim.source());
    same_layout::<optim::AdamSlot>(Shader::Optim.source());
    same_layout::<optim::AdamGroupParams>(Shader::Optim.source());
    same_layout::<attention::AttentionParams>(Shader::Attention.source());
    same_layout::<texture::TextureParams>(Shader::Texture.source());
    same_layout::<probe::ProbeParams>(Shader::Probe.source());
    let emitted = elementwise::elementwise(
        &Program::single(Op::Unary(UnaryOp::Neg), 1),
        &[(DType::F32, &Layout::contiguous(&[3]))],
        &[3],
    )
    .expect("emits");
    same_layout::<elementwise::ElementwiseParams>(&emitted.signature.source());
    same_layout::<elementwise::Operand>(&emitted.signature.source());
}

#[test]
fn a_changed_field_is_caught() {
    // The check itself must be able to fail: one field out of place.
    let wrong = Shader::Fill
        .source()
        .replace("    a: u32,\n    b: u32,", "    b: u32,\n    a: u32,");
    assert!(layout_mismatch::<fill::FillParams>(&wrong).is_some());
    let short = Shader::Fill.source().replace("    _pad: u32,\n", "");
    assert!(layout_mismatch::<fill::FillParams>(&short).is_some());
}

#[test]
fn emitted_kernels_validate_with_naga() {
    let shape = [7, 33];
    let dense = Layout::contiguous(&shape);
    let scalar = Layout {
        shape: shape.to_vec(),
        strides: vec![0, 0],
        offset: 3,
    };
    let transposed = Layout {
        shape: shape.to_vec(),
        strides: vec![1, 7],
        offset: 0,
    };
    let mut programs: Vec<(Program, Vec<(DType, &Layout)>)> = Vec::new();
    for u in [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Recip,
        UnaryOp::Sin,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Relu,
    ] {
        programs.push((
            Program::single(Op::Unary(u), 1),
            vec![(DType::F32, &transposed)],
        ));
    }
    for b in [
        BinaryOp::Add,
        BinaryOp::Mul,
        BinaryOp::Max,
        BinaryOp::Pow,
        BinaryOp::CmpLt,
        BinaryOp::CmpEq,
    ] {
        for t in [DType::F32, DType::I32] {
            programs.push((
                Program::single(Op::Binary(b), 2),
                vec![(t, &dense), (t, &scalar)],
            ));
        }
    }
    for t in [DType::F32, DType::I32] {
        programs.push((
            Program::single(Op::Where, 3),
            vec![(DType::F32, &dense), (t, &transposed), (t, &scalar)],
        ));
        programs.push((Program::single(Op::Cast(DType::F32), 1), vec![(t, &dense)]));
        programs.push((Program::single(Op::Cast(DType::I32), 1), vec![(t, &dense)]));
    }
    // A fused chain over the most leaves a kernel may bind.
    let max = elementwise::MAX_LEAVES;
    let mut instrs = vec![Instr {
        op: Op::Binary(BinaryOp::Mul),
        args: vec![0, 1],
    }];
    for k in 2..max {
        instrs.push(Instr {
            op: Op::Binary(BinaryOp::Add),
            args: vec![max + k - 2, k],
        });
    }
    instrs.push(Instr {
        op: Op::Unary(UnaryOp::Tanh),
        args: vec![max + instrs.len() - 1],
    });
    let leaves = (0..max)
        .map(|k| (DType::F32, [&dense, &scalar, &transposed][k % 3]))
        .collect();
    programs.push((
        Program {
            leaves: max,
            instrs,
        },
        leaves,
    ));
    for (i, (program, leaves)) in programs.iter().enumerate() {
        let kernel = elementwise::elementwise(program, leaves, &shape).expect("emits");
        validate(
            &format!("emitted kernel {i} ({program:?})"),
            &kernel.signature.source(),
        );
        // The same program reduced, both ways a reduction runs.
        for (op, tree) in [(ReduceOp::Sum, false), (ReduceOp::Max, true)] {
            let mut reducing = kernel.signature.clone();
            reducing.reduce = Some(elementwise::Reduction { op, tree });
            validate(
                &format!("emitted {op:?} reduction {i} ({program:?})"),
                &reducing.source(),
            );
        }
    }
}

/// The first adapter's device, or None (then the test passes unless
/// `SHADERGRAD_REQUIRE_GPU=1`).
fn device() -> Option<std::sync::Arc<super::device::Context>> {
    match super::device::open(0) {
        Ok(id) => Some(super::device::context(id).expect("opened")),
        Err(e) => {
            let required = std::env::var("SHADERGRAD_REQUIRE_GPU").is_ok_and(|v| v == "1");
            assert!(!required, "SHADERGRAD_REQUIRE_GPU=1 but {e}");
            None
        }
    }
}

/// Values in [-0.5, 0.5) from a hash of (index, seed).
fn filled(shape: &[usize], seed: u32) -> crate::backend::Value {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect();
    crate::backend::Value::f32(v, shape)
}

/// Every matmul version (the engine's three and the two the benchmark
/// compares them with), with and without split-K, against the cpu
/// backend, on odd and batched strided shapes.
#[test]
fn every_matmul_version_matches_the_cpu() {
    use super::kernels::gemm::{matmul, GemmPlan, MatmulKernel};
    use super::kernels::Epilogue;
    use crate::backend::cpu;
    let Some(ctx) = device() else { return };
    // The software Vulkan adapter of CI has subgroups (of 8): the subgroup
    // kernel must be among the versions checked there.
    if ctx.info.backend == wgpu::Backend::Vulkan
        && ctx.device.features().contains(wgpu::Features::SUBGROUP)
    {
        assert!(
            MatmulKernel::Subgroup.runs_on(&ctx),
            "{ctx:?}: subgroups {}..{}",
            ctx.info.subgroup_min_size,
            ctx.info.subgroup_max_size
        );
    }
    for (m, k, n, batch) in [
        (1, 1, 1, 1),
        (7, 33, 5, 1),
        (65, 17, 130, 2),
        (33, 257, 31, 3),
        (129, 40, 257, 1),
        // K long enough that a kernel with several loop trips per k would
        // meet llvmpipe's cap on loop iterations per invocation.
        (5, 20000, 3, 1),
    ] {
        let a = filled(&[batch, m, k], 1);
        let b = filled(&[batch, k, n], 2);
        let shape = [batch, m, n];
        let want =
            cpu::exec(&Op::MatMul, &[a.clone(), b.clone()], &shape, DType::F32).expect("cpu");
        let want = want.layout_gather(match want.storage.as_ref() {
            crate::backend::Storage::F32(d) => d,
            _ => unreachable!("f32"),
        });
        let runs = |k: &MatmulKernel| k.runs_on(&ctx);
        let mut plans: Vec<GemmPlan> = MatmulKernel::ALL
            .into_iter()
            .filter(runs)
            .map(GemmPlan::single)
            .collect();
        for kernel in MatmulKernel::FULL.into_iter().filter(runs) {
            plans.push(GemmPlan { kernel, splits: 3 });
        }
        for plan in plans {
            let mut rec = super::Recorder::new(ctx.clone()).expect("recorder");
            let (ga, gb) = (rec.on_device(&a).expect("a"), rec.on_device(&b).expect("b"));
            let got = matmul(&mut rec, Some(plan), &ga, &gb, &shape, None).expect("matmul");
            rec.submit().expect("submit");
            let got = got.to_host().expect("download");
            let got = got.layout_gather(match got.storage.as_ref() {
                crate::backend::Storage::F32(d) => d,
                _ => unreachable!("f32"),
            });
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 + 1e-4 * w.abs(),
                    "{plan:?} {m}x{k}x{n} batch {batch}: element {i} is {g}, want {w}"
                );
            }
            if !MatmulKernel::FULL.contains(&plan.kernel) {
                continue;
            }
            // With a bias per column, and relu, stored by the kernel.
            let bias = filled(&[n], 5);
            let mut rec = super::Recorder::new(ctx.clone()).expect("recorder");
            let (ga, gb) = (rec.on_device(&a).expect("a"), rec.on_device(&b).expect("b"));
            let gbias = rec.on_device(&bias).expect("bias");
            let epilogue = Epilogue {
                bias: &gbias,
                relu: true,
            };
            let got =
                matmul(&mut rec, Some(plan), &ga, &gb, &shape, Some(epilogue)).expect("matmul");
            rec.submit().expect("submit");
            let got = got.to_host().expect("download");
            let got = got.layout_gather(match got.storage.as_ref() {
                crate::backend::Storage::F32(d) => d,
                _ => unreachable!("f32"),
            });
            let bias = match bias.storage.as_ref() {
                crate::backend::Storage::F32(d) => d.clone(),
                _ => unreachable!("f32"),
            };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let y = (w + bias[i % n]).max(0.0);
                assert!(
                    (g - y).abs() <= 1e-4 + 1e-4 * y.abs(),
                    "{plan:?} {m}x{k}x{n} batch {batch} + bias, relu: element {i} is {g}, want {y}"
                );
            }
        }
    }
}

/// The three convolutions through the engine's three GEMM kernels, with and without
/// split-K, against the cpu backend: strided, padded, dilated and grouped
/// geometries with edges that cut through tiles.
#[test]
fn every_conv_plan_matches_the_cpu() {
    use super::kernels::gemm::{conv, GemmMode, GemmPlan, MatmulKernel};
    use super::kernels::Epilogue;
    use crate::backend::{cpu, Storage, Value};
    use crate::op::ConvGeom;
    let Some(ctx) = device() else { return };
    let dense = |v: &Value| match v.storage.as_ref() {
        Storage::F32(d) => v.layout_gather(d),
        _ => unreachable!("f32"),
    };
    // (batch, c, h, w, o, kh, kw, stride, padding, dilation, groups)
    for (nb, c, h, w, o, kh, kw, s, p, d, groups) in [
        (2, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1),
        (3, 4, 11, 11, 130, 3, 3, 2, 1, 1, 2),
        (1, 8, 17, 17, 16, 3, 3, 1, 2, 2, 1),
    ] {
        let g = ConvGeom {
            stride: (s, s),
            padding: (p, p),
            dilation: (d, d),
            groups,
        };
        let oh = (h + 2 * p - d * (kh - 1) - 1) / s + 1;
        let ow = (w + 2 * p - d * (kw - 1) - 1) / s + 1;
        let x = filled(&[nb, c, h, w], 1);
        let wt = filled(&[o, c / groups, kh, kw], 2);
        let dy = filled(&[nb, o, oh, ow], 3);
        let cases = [
            (
                GemmMode::ConvForward,
                Op::Conv2d(g),
                [&x, &wt],
                vec![nb, o, oh, ow],
            ),
            (
                GemmMode::ConvBackwardData,
                Op::Conv2dBackwardData(g),
                [&dy, &wt],
                vec![nb, c, h, w],
            ),
            (
                GemmMode::ConvBackwardFilter,
                Op::Conv2dBackwardFilter(g),
                [&x, &dy],
                vec![o, c / groups, kh, kw],
            ),
        ];
        for (mode, op, [p_in, q_in], shape) in cases {
            let want =
                cpu::exec(&op, &[p_in.clone(), q_in.clone()], &shape, DType::F32).expect("cpu");
            let want = dense(&want);
            for kernel in MatmulKernel::FULL.into_iter().filter(|k| k.runs_on(&ctx)) {
                for splits in [1, 2] {
                    let plan = GemmPlan { kernel, splits };
                    let mut rec = super::Recorder::new(ctx.clone()).expect("recorder");
                    let gp = rec.on_device(p_in).expect("p");
                    let gq = rec.on_device(q_in).expect("q");
                    let got = conv(&mut rec, mode, (&gp, &gq), &g, &shape, Some(plan), None)
                        .expect("conv");
                    rec.submit().expect("submit");
                    let got = dense(&got.to_host().expect("download"));
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 + 1e-4 * b.abs(),
                            "{mode:?} {plan:?} {g:?}: element {i} is {a}, want {b}"
                        );
                    }
                    if !matches!(mode, GemmMode::ConvForward) {
                        continue;
                    }
                    // With the bias per output channel, and relu, stored
                    // by the kernel (one split whatever the plan says).
                    let bias = filled(&[o], 4);
                    let relu = splits == 1;
                    let mut rec = super::Recorder::new(ctx.clone()).expect("recorder");
                    let gp = rec.on_device(p_in).expect("p");
                    let gq = rec.on_device(q_in).expect("q");
                    let gb = rec.on_device(&bias).expect("bias");
                    let epilogue = Epilogue { bias: &gb, relu };
                    let got = conv(
                        &mut rec,
                        mode,
                        (&gp, &gq),
                        &g,
                        &shape,
                        Some(plan),
                        Some(epilogue),
                    )
                    .expect("conv");
                    assert_eq!(rec.dispatches(), 1, "one split");
                    rec.submit().expect("submit");
                    let got = dense(&got.to_host().expect("download"));
                    let bias = dense(&bias);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        let y = b + bias[(i / (oh * ow)) % o];
                        let y = if relu { y.max(0.0) } else { y };
                        assert!(
                            (a - y).abs() <= 1e-4 + 1e-4 * y.abs(),
                            "{plan:?} {g:?} relu {relu}: element {i} is {a}, want {y}"
                        );
                    }
                }
            }
        }
    }
}

/// A kernel that does not compile is an error naming it, not an abort.
#[test]
fn a_kernel_that_fails_to_compile_is_named() {
    let Some(ctx) = device() else { return };
    let broken = "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }";
    let err = ctx
        .generated_pipeline("broken.wgsl", broken)
        .expect_err("must not compile");
    assert!(err.to_string().contains("kernel broken.wgsl"), "{err}");
    // The device is still usable afterwards.
    ctx.check_alive().expect("alive");
}

/// What each entry point of every shader file asks of a device (storage
/// buffers and textures, workgroup memory and size) fits
/// `embed::required_limits`, so an app's device that passes
/// `Device::from_wgpu`'s check runs every kernel.
#[test]
fn every_kernel_fits_the_limits_required_of_an_app_device() {
    let need = crate::embed::required_limits();
    for s in Shader::ALL {
        let module = naga::front::wgsl::parse_str(s.source()).expect("parses");
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .expect("validates");
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("layout");
        for (i, ep) in module.entry_points.iter().enumerate() {
            let uses = info.get_entry_point(i);
            let (mut storage, mut textures, mut sampled, mut workgroup) = (0u32, 0u32, 0u32, 0u32);
            for (handle, var) in module.global_variables.iter() {
                if uses[handle].is_empty() {
                    continue;
                }
                match var.space {
                    naga::AddressSpace::Storage { .. } => storage += 1,
                    naga::AddressSpace::WorkGroup => workgroup += layouter[var.ty].size,
                    naga::AddressSpace::Handle => match module.types[var.ty].inner {
                        naga::TypeInner::Image {
                            class: naga::ImageClass::Storage { .. },
                            ..
                        } => textures += 1,
                        naga::TypeInner::Image { .. } => sampled += 1,
                        _ => {}
                    },
                    _ => {}
                }
            }
            let [x, y, z] = ep.workgroup_size;
            let name = format!("{}:{}", s.file(), ep.name);
            // adam_group runs only where the device binds its buffers
            // (`optim::groups_updates`); elsewhere each parameter's `adam` does.
            let optional = name == "optim.wgsl:adam_group";
            assert!(
                storage <= need.max_storage_buffers_per_shader_stage || optional,
                "{name}: {storage} storage buffers"
            );
            if optional {
                assert_eq!(
                    storage as usize,
                    optim::GROUP_SLOTS * optim::SLOT_BINDINGS,
                    "{name}"
                );
            }
            assert!(
                textures <= need.max_storage_textures_per_shader_stage,
                "{name}: {textures} storage textures"
            );
            assert!(
                sampled <= need.max_sampled_textures_per_shader_stage,
                "{name}: {sampled} textures"
            );
            assert!(
                workgroup <= need.max_compute_workgroup_storage_size,
                "{name}: {workgroup} bytes of workgroup memory"
            );
            assert!(
                x * y * z <= need.max_compute_invocations_per_workgroup,
                "{name}: {x}x{y}x{z}"
            );
            assert!(
                x <= need.max_compute_workgroup_size_x
                    && y <= need.max_compute_workgroup_size_y
                    && z <= need.max_compute_workgroup_size_z,
                "{name}: {x}x{y}x{z}"
            );
            assert!(
                1 + storage + textures + sampled <= need.max_bindings_per_bind_group || optional,
                "{name}: bindings"
            );
        }
    }
}

/// The FMA probe computes what its chains say (x <- 0.9999 x + 1e-4 from
/// each invocation's start), so the benchmark's peak counts real work.
#[test]
fn the_fma_probe_computes_its_chains() {
    let Some(ctx) = device() else { return };
    let (invocations, iterations) = (512, 37);
    let mut rec = super::Recorder::new(ctx).expect("recorder");
    let sink = probe::fma_probe(&mut rec, invocations, iterations).expect("probe");
    rec.submit().expect("submit");
    let host = sink.to_host().expect("download");
    let crate::backend::Storage::F32(got) = host.storage.as_ref() else {
        panic!("f32 sink")
    };
    let steps = 4 * iterations as i32;
    for i in [0usize, 1, 255, 256, 511] {
        let s = (i & 1023) as f64 * 1e-6;
        for lane in 0..4 {
            let want: f64 = (0..8)
                .map(|chain| {
                    let start = s + 0.1 * lane as f64 + 0.01 * chain as f64;
                    1.0 + (start - 1.0) * 0.9999f64.powi(steps)
                })
                .sum();
            let g = got[i * 4 + lane] as f64;
            assert!(
                (g - want).abs() < 1e-3,
                "invocation {i} lane {lane}: {g}, want {want}"
            );
        }
    }
}

/// A free buffer that no recording takes is released after a while, and
/// a recurring upload reuses a free buffer of its class instead of adding
/// one to the pool each time (an evaluation's batches used to pile up).
#[test]
fn the_pool_reuses_uploads_and_trims_what_a_run_stopped_using() {
    use crate::backend::Storage;
    let Some(ctx) = device() else { return };
    // An odd size no other test allocates: its class is this test's alone.
    let len = 123_457;
    let class = super::pool::size_class(4 * len as u64);
    let data: Vec<f32> = (0..len).map(|i| i as f32).collect();
    for round in 0..3 {
        let up = ctx.upload(&Storage::F32(data.clone())).expect("upload");
        let back = ctx.download(&up).expect("download");
        assert!(
            matches!(&back, Storage::F32(v) if v[..] == data[..]),
            "round {round}"
        );
        drop(up);
        assert_eq!(ctx.pooled(class), 1, "round {round}: one buffer, reused");
    }
    for _ in 0..400 {
        super::recorder::Recorder::new(ctx.clone())
            .expect("recorder")
            .submit()
            .expect("submit");
    }
    assert_eq!(ctx.pooled(class), 0, "trimmed after 400 submits unused");
}

/// Adam over parameters of odd sizes (one element, one workgroup and a
/// bit, a transposed gradient, an empty one) in one recording: four to a
/// dispatch where the device binds `adam_group`'s buffers, each equal to
/// the cpu's update within an ulp; a kernel that reads an update's result
/// gets it even while the rest of its group waits.
#[test]
fn adam_updates_share_dispatches_and_match_the_cpu() {
    use crate::backend::cpu;
    use crate::backend::Value;
    let Some(ctx) = device() else { return };
    let step = Op::AdamUpdate(crate::op::AdamStep {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.01,
        t: 3,
    });
    let shapes: [&[usize]; 7] = [&[1], &[257], &[33, 7], &[0, 3], &[5], &[64, 9], &[300]];
    let inputs: Vec<Vec<Value>> = shapes
        .iter()
        .enumerate()
        .map(|(k, shape)| {
            let seed = 10 * k as u32;
            let g = if shape.len() == 2 {
                // Transposed: what a linear layer's weight gradient looks like.
                let mut t = filled(&[shape[1], shape[0]], seed + 1);
                t.layout = t.layout.permute(&[1, 0]);
                t
            } else {
                filled(shape, seed + 1)
            };
            let v = filled(shape, seed + 3);
            let v = match v.storage.as_ref() {
                crate::backend::Storage::F32(x) => {
                    Value::f32(x.iter().map(|x| x.abs()).collect(), shape)
                }
                _ => unreachable!("f32"),
            };
            vec![filled(shape, seed), g, filled(shape, seed + 2), v]
        })
        .collect();
    let host = |v: &Value| -> Vec<f32> {
        v.layout_gather(match v.storage.as_ref() {
            crate::backend::Storage::F32(d) => d,
            _ => unreachable!("f32"),
        })
    };
    let mut rec = super::Recorder::new(ctx.clone()).expect("recorder");
    let mut outs = Vec::new();
    for (ins, shape) in inputs.iter().zip(shapes) {
        let on = ins
            .iter()
            .map(|v| rec.on_device(v))
            .collect::<crate::Result<Vec<_>>>()
            .expect("upload");
        outs.push(super::kernels::exec(&mut rec, &step, &on, shape, DType::F32).expect("adam"));
    }
    let updates = shapes
        .iter()
        .filter(|s| s.iter().product::<usize>() > 0)
        .count();
    let grouped = ctx.limits.max_storage_buffers_per_shader_stage as usize
        >= optim::GROUP_SLOTS * optim::SLOT_BINDINGS;
    let before = rec.dispatches();
    // Reading the last update's new parameter dispatches its group first.
    let doubled = super::kernels::exec(
        &mut rec,
        &Op::Binary(BinaryOp::Add),
        &[outs[6][0].clone(), outs[6][0].clone()],
        shapes[6],
        DType::F32,
    )
    .expect("add");
    let dispatches = rec.dispatches();
    rec.submit().expect("submit");
    if grouped {
        assert_eq!(before, 1, "one full group dispatched while recording");
        assert_eq!(dispatches, 3, "the second group, then the add");
    } else {
        assert_eq!(dispatches, updates + 1);
    }
    for (k, (ins, got)) in inputs.iter().zip(&outs).enumerate() {
        let want =
            crate::backend::Session::exec(&mut cpu::CpuSession, &step, ins, shapes[k], DType::F32)
                .expect("cpu");
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            let (g, w) = (host(&g.to_host().expect("download")), host(w));
            assert_eq!(g.len(), w.len());
            for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
                assert!(
                    ulps <= 1,
                    "parameter {k} output {j} element {i}: {a} vs {b}"
                );
            }
        }
    }
    let want: Vec<f32> = host(&outs[6][0].to_host().expect("download"))
        .iter()
        .map(|x| x + x)
        .collect();
    assert_eq!(host(&doubled[0].to_host().expect("download")), want);
}

/// Work recorded again over the same pooled buffers binds them with the
/// bind groups made the first time, and still computes the right values.
/// (Other tests share the device and may empty the cache meanwhile, so
/// one cached round out of several is asked for.)
#[test]
fn repeated_work_finds_its_bind_groups_cached() {
    let Some(ctx) = device() else { return };
    // Odd sizes no other test allocates: these size classes are this test's.
    let shape = [3, 33_331];
    let (a, b) = (filled(&shape, 1), filled(&shape, 2));
    let host = |v: &crate::backend::Value| match v.storage.as_ref() {
        crate::backend::Storage::F32(x) => x.clone(),
        other => panic!("f32 expected: {other:?}"),
    };
    let want: Vec<f32> = host(&a).iter().zip(host(&b)).map(|(x, y)| x + y).collect();
    let a = super::on_device(&ctx, &a).expect("upload");
    let b = super::on_device(&ctx, &b).expect("upload");
    let mut created = Vec::new();
    for _ in 0..5 {
        let mut rec = super::recorder::Recorder::new(ctx.clone()).expect("recorder");
        let out = super::kernels::exec(
            &mut rec,
            &Op::Binary(BinaryOp::Add),
            &[a.clone(), b.clone()],
            &shape,
            DType::F32,
        )
        .expect("add");
        created.push(rec.bind_groups_created());
        rec.submit().expect("submit");
        assert_eq!(host(&out[0].to_host().expect("download")), want);
    }
    assert!(
        created[0] > 0,
        "the first round creates its groups: {created:?}"
    );
    assert!(
        created[1..].contains(&0),
        "no round found them cached: {created:?}"
    );
}

/// Timestamps around compute passes measure the passes: 256 times the
/// work takes longer, and work in a second pass (after a clear) counts.
/// The margins are wide: device time under a loaded test run varies.
#[cfg(feature = "bench")]
#[test]
fn pass_timestamps_time_the_recorded_work() {
    let Some(ctx) = device() else { return };
    if !ctx
        .device
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY)
    {
        return;
    }
    // One pass per entry of `iterations`, a clear between them.
    let timed = |iterations: &[u32]| -> f64 {
        let mut rec = super::Recorder::new(ctx.clone()).expect("recorder");
        assert!(rec.time_passes());
        for &n in iterations {
            let sink = probe::fma_probe(&mut rec, 4096, n).expect("probe");
            rec.clear(&sink);
        }
        rec.submit_timed().expect("submit").expect("timestamps")
    };
    // llvmpipe compiles a pipeline at its first dispatch, inside the pass.
    timed(&[16]);
    let (short, long) = (timed(&[16]), timed(&[4096]));
    assert!(short > 0.0 && long > 4.0 * short, "{short} s vs {long} s");
    let second_long = timed(&[16, 4096]);
    assert!(
        second_long > 4.0 * short,
        "the second pass is counted: {second_long} s vs {short} s"
    );
}

/// The engine's GEMM plans: large tiles only where M and N fill them (and
/// on a GPU still give 256 workgroups), 32x128 tiles for M <= 32 (on a
/// software adapter also wherever N fills them), split-K where tiles are
/// few and K is long, and on a software adapter only for backward-filter;
/// the subgroup kernel for a software adapter's matmuls.
#[test]
fn gemm_plans_follow_the_shape_and_the_device() {
    use super::kernels::gemm::{GemmMode, GemmPlan, MatmulKernel};
    let plan = |software, mode, m, n, k, z| GemmPlan::choose(software, false, mode, m, n, k, z);
    let with_subgroups =
        |software, mode, m, n, k, z| GemmPlan::choose(software, true, mode, m, n, k, z);
    let (mm, filter) = (GemmMode::MatMul, GemmMode::ConvBackwardFilter);
    let large = |splits| GemmPlan {
        kernel: MatmulKernel::Large,
        splits,
    };
    let blocked = |splits| GemmPlan {
        kernel: MatmulKernel::Blocked,
        splits,
    };
    let small = |splits| GemmPlan {
        kernel: MatmulKernel::Small,
        splits,
    };
    let (gpu, cpu2, cpu64) = (None, Some(2), Some(64));
    assert_eq!(plan(gpu, mm, 4096, 4096, 4096, 1), large(1));
    // 64 large tiles would idle most of a big GPU: 256 small ones instead.
    assert_eq!(plan(gpu, mm, 1024, 1024, 1024, 1), blocked(1));
    // A batch-32 layer's product: one tile, K split into 256-long slices.
    assert_eq!(plan(gpu, mm, 32, 64, 2304, 1), small(9));
    assert_eq!(plan(gpu, mm, 32, 64, 100, 1), small(1));
    assert_eq!(plan(gpu, mm, 64, 64, 100, 1), blocked(1));
    assert_eq!(plan(cpu2, mm, 512, 512, 512, 1), large(1));
    assert_eq!(plan(cpu2, mm, 32, 64, 2304, 1), small(1));
    // Backward-filter splits until each thread has two workgroups: six
    // tiles keep two threads busy, not 64; one tile is split in four.
    assert_eq!(plan(cpu2, filter, 64, 288, 5408, 1), small(1));
    assert_eq!(plan(cpu64, filter, 64, 288, 5408, 1), small(22));
    assert_eq!(plan(cpu2, filter, 32, 27, 28800, 1), small(4));
    assert_eq!(plan(cpu2, mm, 64, 128, 100, 1), small(1));
    // Half of a 128-wide tile would idle: 64x64 tiles.
    assert_eq!(plan(cpu2, mm, 8192, 64, 64, 1), blocked(1));
    // With subgroups a software adapter's matmuls take the subgroup kernel,
    // its convolutions and a GPU's products what they took before.
    let subgroup = GemmPlan::single(MatmulKernel::Subgroup);
    for (m, n, k) in [(8192, 64, 64), (512, 512, 512), (32, 64, 2304)] {
        assert_eq!(with_subgroups(cpu2, mm, m, n, k, 1), subgroup);
    }
    assert_eq!(with_subgroups(cpu2, filter, 32, 27, 28800, 1), small(4));
    assert_eq!(with_subgroups(gpu, mm, 4096, 4096, 4096, 1), large(1));
    assert_eq!(with_subgroups(gpu, mm, 32, 64, 2304, 1), small(9));
}

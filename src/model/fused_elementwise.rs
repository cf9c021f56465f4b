//! The fused element-wise kernels of a BERT layer (`train.fused_elementwise`): bias +
//! dropout + residual + LayerNorm, and the erf GELU with its bias, each one pass over
//! [tokens x hidden] forward and one backward instead of the five to eight separate
//! element-wise kernels (and their reads and writes) of eager libtorch. The CUDA source is
//! `src/shim/fused_elementwise.cuh`, compiled by NVRTC on the host that runs it; a host build
//! of the same header (`fused_elementwise_host.cpp`) lets the tests check the arithmetic
//! against libtorch's unfused operations without a GPU.

use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};

use crate::runtime::cuda_driver::CudaDriver;
use crate::runtime::nvrtc::Nvrtc;
use crate::runtime::{shim_message, torch_runtime};

extern "C" {
    fn biobert_fused_register(launch_fn: *const c_void, functions: *const *mut c_void);
    fn biobert_fused_layer_norm(
        x: *const c_void,
        bias: *const c_void,
        residual: *const c_void,
        gamma: *const c_void,
        beta: *const c_void,
        p: f64,
        key: i64,
        eps: f64,
        message: *mut *mut c_char,
    ) -> *mut c_void;
    fn biobert_fused_bias_gelu(
        z: *const c_void,
        bias: *const c_void,
        message: *mut *mut c_char,
    ) -> *mut c_void;
}

/// The kernels' CUDA source, compiled at run time.
pub const SOURCE: &str = include_str!("../shim/fused_elementwise.cuh");

/// The kernels' entry points, per storage type.
pub const KERNELS: [&str; 8] = [
    "biobert_ln_forward_f32",
    "biobert_ln_backward_f32",
    "biobert_gelu_forward_f32",
    "biobert_gelu_backward_f32",
    "biobert_ln_forward_bf16",
    "biobert_ln_backward_bf16",
    "biobert_gelu_forward_bf16",
    "biobert_gelu_backward_bf16",
];

/// The widest row the LayerNorm kernels take (one warp per row, 32 columns per lane), and
/// the multiple a row's width must be.
pub const MAX_HIDDEN: i64 = 1024;
pub const HIDDEN_MULTIPLE: i64 = 32;

/// Dropout's threshold on 32 random bits for keeping an element with probability
/// `1 - p`: 2^32 (keep all) when `p` is 0.
pub fn keep_threshold(p: f64) -> u64 {
    ((1.0 - p) * 4_294_967_296.0).round() as u64
}

/// Whether a hidden size suits the LayerNorm kernels; the reason when not.
pub fn hidden_size_fits(hidden: i64) -> Result<(), String> {
    if hidden % HIDDEN_MULTIPLE != 0 || hidden > MAX_HIDDEN || hidden <= 0 {
        return Err(format!(
            "the fused LayerNorm kernel takes hidden sizes that are multiples of {HIDDEN_MULTIPLE} up to {MAX_HIDDEN}, not {hidden}"
        ));
    }
    Ok(())
}

/// The kernels, loaded for one GPU and checked there against the unfused operations.
#[derive(Clone, Copy)]
pub struct FusedKernels {
    /// What was compiled and checked, for the start-up line.
    pub description: &'static str,
    /// The same operations unfused, in libtorch, on any device: for the tests of the
    /// encoder's fused layer on hosts without a GPU.
    host_reference: bool,
}

/// Loaded once per process: NVRTC's PTX in the primary context, the handles in the shim.
static LOADED: OnceLock<Result<String, String>> = OnceLock::new();

impl FusedKernels {
    /// Compiles the kernels for `device`'s GPU, loads them and checks them on it, for a
    /// model of width `hidden` whose hidden states are `activations`; the reason when they
    /// cannot be used (a CPU, no NVRTC, a width the kernels do not take, a failed check).
    pub fn load(device: Device, hidden: i64, activations: Kind) -> Result<FusedKernels, String> {
        let Device::Cuda(ordinal) = device else {
            return Err("the fused kernels need a CUDA device; this run is on the CPU".into());
        };
        hidden_size_fits(hidden)?;
        let loaded = LOADED.get_or_init(|| compile_and_register(ordinal));
        let description = loaded.clone()?;
        self_check(device, hidden, Kind::Float)?;
        if activations == Kind::BFloat16 {
            self_check(device, hidden, Kind::BFloat16)?;
        }
        Ok(FusedKernels {
            description: Box::leak(description.into_boxed_str()),
            host_reference: false,
        })
    }

    /// The kernels for `bert` on `device`: its GELU must be BERT's erf GELU, and its width
    /// and hidden-state dtype are the ones checked on the GPU.
    pub fn for_model(
        bert: &crate::model::bert::Bert,
        device: Device,
    ) -> Result<FusedKernels, String> {
        let act = &bert.config.hidden_act;
        if act != "gelu" {
            return Err(format!(
                "the fused GELU is the erf GELU (hidden_act = \"gelu\"); this model's hidden_act is \"{act}\""
            ));
        }
        FusedKernels::load(device, bert.config.hidden_size, bert.activations)
    }

    /// The unfused operations behind the fused kernels' interface (tests only).
    #[cfg(test)]
    pub fn host_reference() -> FusedKernels {
        FusedKernels {
            description: "libtorch's unfused operations",
            host_reference: true,
        }
    }

    /// LayerNorm(residual + dropout(x + bias)) over the last dimension: `x` and `residual`
    /// in one storage type (f32 or bf16), `bias`, `gamma`, `beta` the fp32 parameters.
    /// The dropout mask's key comes from libtorch's CPU generator, which the trainer seeds
    /// per micro-batch from the run's keyed streams.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        &self,
        x: &Tensor,
        bias: &Tensor,
        residual: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        p: f64,
        eps: f64,
    ) -> Result<Tensor> {
        if self.host_reference {
            let s = (x + bias).to_kind(x.kind()).dropout(p, p > 0.0) + residual;
            let n = s.to_kind(Kind::Float).layer_norm(
                [x.size()[x.dim() - 1]],
                Some(gamma),
                Some(beta),
                eps,
                false,
            );
            return Ok(n.to_kind(x.kind()));
        }
        let key = if p > 0.0 { next_key() } else { 0 };
        let (x, residual) = (x.contiguous(), residual.contiguous());
        let h = |t: &Tensor| t.as_ptr() as *const c_void;
        let mut message: *mut c_char = std::ptr::null_mut();
        // SAFETY: live tch handles; the shim returns a new handle we own, or null and a
        // malloc'd message, and catches every C++ exception.
        let out = unsafe {
            biobert_fused_layer_norm(
                h(&x),
                h(bias),
                h(&residual),
                h(gamma),
                h(beta),
                p,
                key,
                eps,
                &mut message,
            )
        };
        take(out, message, "fused LayerNorm")
    }

    /// gelu(z + bias), erf form: `z` f32 or bf16, `bias` the fp32 parameter.
    pub fn bias_gelu(&self, z: &Tensor, bias: &Tensor) -> Result<Tensor> {
        if self.host_reference {
            return Ok((z + bias).to_kind(z.kind()).gelu("none"));
        }
        let z = z.contiguous();
        let mut message: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in layer_norm.
        let out = unsafe {
            biobert_fused_bias_gelu(
                z.as_ptr() as *const c_void,
                bias.as_ptr() as *const c_void,
                &mut message,
            )
        };
        take(out, message, "fused bias + GELU")
    }
}

fn take(out: *mut c_void, message: *mut c_char, what: &str) -> Result<Tensor> {
    if out.is_null() {
        // SAFETY: the shim set `message` when it returned null.
        return Err(anyhow!("{what}: {}", unsafe {
            shim_message::take(message)
        }));
    }
    // SAFETY: a fresh at::Tensor* allocated with new, as tch's own handles are.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// A dropout key from libtorch's CPU generator (seeded per micro-batch by the trainer).
fn next_key() -> i64 {
    Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0])
}

/// NVRTC's PTX for the GPU at `ordinal`, loaded into libtorch's primary context, the
/// handles given to the shim. The driver stays open for the life of the process.
fn compile_and_register(ordinal: usize) -> Result<String, String> {
    // libtorch makes its primary context current on this thread.
    let _ = Tensor::zeros([1], (Kind::Float, Device::Cuda(ordinal)));
    let driver: &'static CudaDriver = Box::leak(Box::new(CudaDriver::open()?));
    let info = driver
        .devices()?
        .into_iter()
        .nth(ordinal)
        .ok_or_else(|| format!("no CUDA device {ordinal}"))?;
    let nvrtc = Nvrtc::open(torch_runtime::loaded_torch_lib_dir().as_deref())?;
    let (major, minor) = nvrtc.version()?;
    let cc = info.compute_capability;
    let ptx = nvrtc.ptx(SOURCE, "fused_elementwise.cuh", cc)?;
    let module = driver.load_module(&ptx)?;
    let functions = KERNELS
        .iter()
        .map(|k| driver.function(module, k))
        .collect::<Result<Vec<_>, String>>()?;
    // SAFETY: the launch entry and the handles live as long as the leaked driver (the
    // process); the shim copies the eight pointers.
    unsafe { biobert_fused_register(driver.launch_kernel_entry()?, functions.as_ptr()) };
    Ok(format!(
        "compiled by NVRTC {major}.{minor} for compute capability {}.{} ({})",
        cc.0, cc.1, info.name
    ))
}

/// The fused operations against the unfused ones on the GPU, forward and backward, in
/// `kind` storage, with dropout off (then one call with dropout on: the share it drops).
fn self_check(device: Device, hidden: i64, kind: Kind) -> Result<(), String> {
    let fail = |what: &str, e: String| {
        format!("the fused kernels' check on the GPU failed ({kind:?}, {what}): {e}")
    };
    let kernels = FusedKernels {
        description: "",
        host_reference: false,
    };
    let rows = 96;
    let opts = (Kind::Float, device);
    let leaf = |t: Tensor| t.set_requires_grad(true);
    let x = leaf(Tensor::randn([rows, hidden], opts).to_kind(kind));
    let residual = leaf(Tensor::randn([rows, hidden], opts).to_kind(kind));
    let bias = leaf(Tensor::randn([hidden], opts));
    let gamma = leaf(Tensor::randn([hidden], opts) * 0.1 + 1.0);
    let beta = leaf(Tensor::randn([hidden], opts));
    let dy = Tensor::randn([rows, hidden], opts).to_kind(kind);
    let params = [&x, &bias, &residual, &gamma, &beta];
    let grads = |y: &Tensor| -> Vec<Tensor> {
        let loss = (y.to_kind(Kind::Float) * dy.to_kind(Kind::Float)).sum(Kind::Float);
        Tensor::run_backward(&[loss], &params, false, false)
            .iter()
            .map(|g| g.to_kind(Kind::Float))
            .collect()
    };
    let s = (x.to_kind(Kind::Float) + &bias + residual.to_kind(Kind::Float)).to_kind(kind);
    let unfused = s
        .to_kind(Kind::Float)
        .layer_norm([hidden], Some(&gamma), Some(&beta), 1e-12, false)
        .to_kind(kind);
    let want = grads(&unfused);
    let fused = kernels
        .layer_norm(&x, &bias, &residual, &gamma, &beta, 0.0, 1e-12)
        .map_err(|e| fail("LayerNorm", e.to_string()))?;
    compare("LayerNorm output", &fused, &unfused, kind).map_err(|e| fail("LayerNorm", e))?;
    let got = grads(&fused);
    for (name, (g, w)) in ["x", "bias", "residual", "gamma", "beta"]
        .iter()
        .zip(got.iter().zip(&want))
    {
        compare(&format!("LayerNorm gradient of {name}"), g, w, kind)
            .map_err(|e| fail("LayerNorm", e))?;
    }
    let dropped = kernels
        .layer_norm(&x, &bias, &residual, &gamma, &beta, 0.1, 1e-12)
        .map_err(|e| fail("LayerNorm with dropout", e.to_string()))?;
    let dx = grads(&dropped)[0].shallow_clone();
    let share = f64::try_from(dx.eq(0.0).to_kind(Kind::Float).mean(Kind::Float)).unwrap_or(-1.0);
    if !(0.07..=0.13).contains(&share) {
        return Err(fail(
            "dropout",
            format!("dropped {share:.3} of the elements, not 0.1"),
        ));
    }
    let z = leaf(Tensor::randn([rows, 4 * hidden], opts).to_kind(kind) * 3.0);
    let zb = leaf(Tensor::randn([4 * hidden], opts));
    let dy = Tensor::randn([rows, 4 * hidden], opts);
    let run = |y: &Tensor| -> (Tensor, Tensor) {
        let loss = (y.to_kind(Kind::Float) * &dy).sum(Kind::Float);
        let g = Tensor::run_backward(&[loss], &[&z, &zb], false, false);
        (g[0].to_kind(Kind::Float), g[1].shallow_clone())
    };
    let unfused = (z.to_kind(Kind::Float) + &zb)
        .to_kind(kind)
        .to_kind(Kind::Float)
        .gelu("none")
        .to_kind(kind);
    let (want_z, want_b) = run(&unfused);
    let fused = kernels
        .bias_gelu(&z, &zb)
        .map_err(|e| fail("GELU", e.to_string()))?;
    compare("GELU output", &fused, &unfused, kind).map_err(|e| fail("GELU", e))?;
    let (got_z, got_b) = run(&fused);
    compare("GELU gradient of z", &got_z, &want_z, kind).map_err(|e| fail("GELU", e))?;
    compare("GELU gradient of the bias", &got_b, &want_b, kind).map_err(|e| fail("GELU", e))?;
    Ok(())
}

/// Equal within `kind`'s rounding, relative to the reference's scale.
fn compare(what: &str, got: &Tensor, want: &Tensor, kind: Kind) -> Result<(), String> {
    let tolerance = if kind == Kind::BFloat16 { 3e-2 } else { 1e-4 };
    let (got, want) = (got.to_kind(Kind::Float), want.to_kind(Kind::Float));
    let scale = f64::try_from(want.abs().max()).unwrap_or(f64::NAN).max(1.0);
    let diff = f64::try_from((&got - &want).abs().max()).unwrap_or(f64::NAN);
    if diff.is_nan() || diff > tolerance * scale {
        return Err(format!("{what} differs by {diff:.3e} (scale {scale:.3e})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::nvrtc::Nvrtc;
    use crate::runtime::torch_runtime;

    // The host build of the device functions (src/shim/fused_elementwise_host.cpp).
    extern "C" {
        fn biobert_fused_philox(ctr: *mut u32, key0: u32, key1: u32);
        fn biobert_fused_keeps(key: u64, i: u64, threshold: u64) -> bool;
        fn biobert_fused_float_to_bf16(f: f32) -> u16;
        fn biobert_fused_bf16_to_float(h: u16) -> f32;
        fn biobert_fused_ln_forward(
            x: *const f32,
            bias: *const f32,
            residual: *const f32,
            gamma: *const f32,
            beta: *const f32,
            y: *mut f32,
            s: *mut f32,
            mean: *mut f32,
            rstd: *mut f32,
            rows: u64,
            h: i32,
            key: u64,
            threshold: u64,
            scale: f32,
            eps: f32,
        );
        fn biobert_fused_ln_backward(
            dy: *const f32,
            s: *const f32,
            mean: *const f32,
            rstd: *const f32,
            gamma: *const f32,
            d_residual: *mut f32,
            dx: *mut f32,
            dgamma: *mut f32,
            dbeta: *mut f32,
            dbias: *mut f32,
            rows: u64,
            h: i32,
            key: u64,
            threshold: u64,
            scale: f32,
        );
        fn biobert_fused_gelu_forward(
            z: *const f32,
            bias: *const f32,
            y: *mut f32,
            rows: u64,
            cols: i32,
        );
        fn biobert_fused_gelu_backward(
            dy: *const f32,
            z: *const f32,
            bias: *const f32,
            dz: *mut f32,
            dbias: *mut f32,
            rows: u64,
            cols: i32,
        );
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
    }

    fn max_diff(a: &[f32], b: &Tensor) -> f64 {
        let b = values(b);
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() as f64)
            .fold(0.0, f64::max)
    }

    fn random(shape: &[i64], seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn philox_gives_random123s_known_answers() {
        // Random123's kat_vectors for philox4x32_10.
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0; 4],
                [0; 2],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            let mut c = ctr;
            unsafe { biobert_fused_philox(c.as_mut_ptr(), key[0], key[1]) };
            assert_eq!(c, want, "counter {ctr:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn dropout_masks_keep_their_share_and_differ_between_keys() {
        let n = 200_000u64;
        let threshold = keep_threshold(0.1);
        let mask = |key: u64| -> Vec<bool> {
            (0..n)
                .map(|i| unsafe { biobert_fused_keeps(key, i, threshold) })
                .collect()
        };
        let (a, b) = (mask(7), mask(8));
        let share = |m: &[bool]| m.iter().filter(|&&k| k).count() as f64 / n as f64;
        assert!((share(&a) - 0.9).abs() < 0.005, "{}", share(&a));
        assert!((share(&b) - 0.9).abs() < 0.005, "{}", share(&b));
        // Independent streams: both dropped as often as chance says (0.1 x 0.1).
        let both = a.iter().zip(&b).filter(|(x, y)| !**x && !**y).count() as f64 / n as f64;
        assert!((both - 0.01).abs() < 0.002, "{both}");
        // p = 0 keeps everything.
        assert!((0..1000).all(|i| unsafe { biobert_fused_keeps(3, i, keep_threshold(0.0)) }));
    }

    #[test]
    fn bf16_rounding_is_libtorchs() {
        let mut xs: Vec<f32> = values(&(random(&[4096], 1) * 1000.0));
        // Ties between two bf16 values, both ways, and the specials.
        xs.extend([
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::INFINITY,
            -f32::INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            1e-40,
        ]);
        let torch = values(&Tensor::from_slice(&xs).to_kind(Kind::BFloat16));
        for (x, t) in xs.iter().zip(&torch) {
            let ours = unsafe { biobert_fused_bf16_to_float(biobert_fused_float_to_bf16(*x)) };
            assert_eq!(ours.to_bits(), t.to_bits(), "{x:e}");
        }
        let nan = unsafe { biobert_fused_bf16_to_float(biobert_fused_float_to_bf16(f32::NAN)) };
        assert!(nan.is_nan());
    }

    /// The unfused operations on the same mask, in libtorch.
    fn unfused_layer_norm(
        x: &Tensor,
        bias: &Tensor,
        residual: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        keep: &Tensor,
        scale: f64,
    ) -> Tensor {
        let s = (x + bias) * keep * scale + residual;
        s.layer_norm([x.size()[1]], Some(gamma), Some(beta), 1e-12, false)
    }

    #[test]
    fn layer_norm_kernels_equal_the_unfused_operations_and_their_gradients() {
        let (rows, h) = (37u64, 96i64);
        let p = 0.1;
        let (key, threshold, scale) = (42u64, keep_threshold(p), 1.0 / (1.0 - p));
        let x = random(&[rows as i64, h], 1).set_requires_grad(true);
        let residual = random(&[rows as i64, h], 2).set_requires_grad(true);
        let bias = random(&[h], 3).set_requires_grad(true);
        let gamma = (random(&[h], 4) * 0.1 + 1.0).set_requires_grad(true);
        let beta = random(&[h], 5).set_requires_grad(true);
        let dy = random(&[rows as i64, h], 6);
        let keep: Vec<f32> = (0..rows * h as u64)
            .map(|i| unsafe { biobert_fused_keeps(key, i, threshold) } as u8 as f32)
            .collect();
        let keep = Tensor::from_slice(&keep).view([rows as i64, h]);
        let y_ref = unfused_layer_norm(&x, &bias, &residual, &gamma, &beta, &keep, scale);
        (&y_ref * &dy).sum(Kind::Float).backward();

        let n = (rows * h as u64) as usize;
        let (vx, vr, vb, vg, vbe, vdy) = (
            values(&x),
            values(&residual),
            values(&bias),
            values(&gamma),
            values(&beta),
            values(&dy),
        );
        let (mut y, mut s) = (vec![0f32; n], vec![0f32; n]);
        let (mut mean, mut rstd) = (vec![0f32; rows as usize], vec![0f32; rows as usize]);
        unsafe {
            biobert_fused_ln_forward(
                vx.as_ptr(),
                vb.as_ptr(),
                vr.as_ptr(),
                vg.as_ptr(),
                vbe.as_ptr(),
                y.as_mut_ptr(),
                s.as_mut_ptr(),
                mean.as_mut_ptr(),
                rstd.as_mut_ptr(),
                rows,
                h as i32,
                key,
                threshold,
                scale as f32,
                1e-12,
            )
        };
        assert!(max_diff(&y, &y_ref) < 1e-5, "y {}", max_diff(&y, &y_ref));

        let (mut d_res, mut dx) = (vec![0f32; n], vec![0f32; n]);
        let (mut dg, mut dbe, mut db) = (
            vec![0f32; h as usize],
            vec![0f32; h as usize],
            vec![0f32; h as usize],
        );
        unsafe {
            biobert_fused_ln_backward(
                vdy.as_ptr(),
                s.as_ptr(),
                mean.as_ptr(),
                rstd.as_ptr(),
                vg.as_ptr(),
                d_res.as_mut_ptr(),
                dx.as_mut_ptr(),
                dg.as_mut_ptr(),
                dbe.as_mut_ptr(),
                db.as_mut_ptr(),
                rows,
                h as i32,
                key,
                threshold,
                scale as f32,
            )
        };
        for (name, ours, theirs) in [
            ("d_residual", &d_res, residual.grad()),
            ("dx", &dx, x.grad()),
            ("dgamma", &dg, gamma.grad()),
            ("dbeta", &dbe, beta.grad()),
            ("dbias", &db, bias.grad()),
        ] {
            let d = max_diff(ours, &theirs);
            assert!(d < 5e-5, "{name}: {d}");
        }
        // Dropout acted: some of x's gradient is exactly zero, where the mask dropped.
        assert!(dx.iter().filter(|&&v| v == 0.0).count() > (n / 20));
    }

    #[test]
    fn gelu_kernels_equal_libtorchs_erf_gelu_and_its_gradients() {
        let (rows, cols) = (29u64, 160i64);
        let z = (random(&[rows as i64, cols], 7) * 3.0).set_requires_grad(true);
        let bias = random(&[cols], 8).set_requires_grad(true);
        let dy = random(&[rows as i64, cols], 9);
        let y_ref = (&z + &bias).gelu("none");
        (&y_ref * &dy).sum(Kind::Float).backward();
        let n = (rows * cols as u64) as usize;
        let (vz, vb, vdy) = (values(&z), values(&bias), values(&dy));
        let mut y = vec![0f32; n];
        unsafe {
            biobert_fused_gelu_forward(vz.as_ptr(), vb.as_ptr(), y.as_mut_ptr(), rows, cols as i32)
        };
        assert!(max_diff(&y, &y_ref) < 1e-5, "y {}", max_diff(&y, &y_ref));
        let (mut dz, mut db) = (vec![0f32; n], vec![0f32; cols as usize]);
        unsafe {
            biobert_fused_gelu_backward(
                vdy.as_ptr(),
                vz.as_ptr(),
                vb.as_ptr(),
                dz.as_mut_ptr(),
                db.as_mut_ptr(),
                rows,
                cols as i32,
            )
        };
        assert!(
            max_diff(&dz, &z.grad()) < 1e-5,
            "dz {}",
            max_diff(&dz, &z.grad())
        );
        assert!(
            max_diff(&db, &bias.grad()) < 1e-4,
            "dbias {}",
            max_diff(&db, &bias.grad())
        );
    }

    #[test]
    fn every_kernel_compiles_to_ptx_for_sm80_and_sm90() {
        let _ = Tensor::zeros([1], (Kind::Float, Device::Cpu)); // libtorch loaded
        let nvrtc = Nvrtc::open(torch_runtime::loaded_torch_lib_dir().as_deref())
            .unwrap_or_else(|e| panic!("{e} (launch/setup.sh installs it with torch)"));
        for capability in [(8, 0), (9, 0)] {
            let ptx = nvrtc
                .ptx(SOURCE, "fused_elementwise.cuh", capability)
                .unwrap_or_else(|e| panic!("compute_{}{}: {e}", capability.0, capability.1));
            let target = format!(".target sm_{}{}", capability.0, capability.1);
            assert!(ptx.contains(&target), "{target} missing");
            for kernel in KERNELS {
                assert!(
                    ptx.contains(&format!(".entry {kernel}(")),
                    "{kernel} missing"
                );
            }
        }
    }

    #[test]
    fn a_broken_source_is_refused_with_the_compilers_log() {
        let _ = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let nvrtc = Nvrtc::open(torch_runtime::loaded_torch_lib_dir().as_deref()).unwrap();
        let e = nvrtc
            .ptx(
                "extern \"C\" __global__ void k() { undefined_name; }",
                "broken.cu",
                (9, 0),
            )
            .unwrap_err();
        assert!(
            e.contains("broken.cu") && e.contains("undefined_name"),
            "{e}"
        );
    }

    #[test]
    fn the_cpu_is_refused_with_the_reason() {
        let e = FusedKernels::load(Device::Cpu, 768, Kind::Float)
            .err()
            .unwrap();
        assert!(e.contains("CUDA device"), "{e}");
    }

    #[test]
    fn hidden_sizes_outside_the_kernels_are_named() {
        assert!(hidden_size_fits(768).is_ok() && hidden_size_fits(1024).is_ok());
        assert!(hidden_size_fits(384).is_ok());
        let e = hidden_size_fits(1280).unwrap_err();
        assert!(e.contains("1280"), "{e}");
        assert!(hidden_size_fits(100).is_err());
    }
}

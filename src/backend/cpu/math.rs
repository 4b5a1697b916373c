//! Elementary functions written so that loops over them vectorize (libm's
//! are calls per element).

/// `e^x` within 4 ulp over the whole f32 range, branch-free: 2^n e^r with
/// n = round(x / ln 2) and Cephes' polynomial for e^r, the power of two
/// applied as two halves so results that are subnormal round once and
/// results past `f32::MAX` become infinity. NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // Beyond these, e^x is 0 or infinite in f32 (clamp keeps NaN).
    let xc = x.clamp(-104.0, 89.0);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // ... and the same n as an integer, from t's low mantissa bits (a
    // float-to-int cast would keep the loop from vectorizing).
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n is in [-150, 128]: each half's power of two is a normal float.
    let half = n_int >> 1;
    let power = |k: i32| f32::from_bits((k.wrapping_add(127) as u32) << 23);
    e * power(half) * power(n_int.wrapping_sub(half))
}

#[cfg(test)]
mod tests {
    use super::exp;

    /// Within 4 ulp of the f64 exponential everywhere a result is normal;
    /// subnormal results, the ends of the range and NaN as f32 has them.
    #[test]
    fn exp_matches_f64_over_the_range() {
        let mut worst = 0.0f64;
        let mut x = -87.3f32;
        while x < 88.72 {
            let want = (x as f64).exp();
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((exp(x) as f64 - want).abs() / ulp);
            x += 0.00731;
        }
        assert!(worst <= 4.0, "{worst} ulp");
        for x in [-100.0f32, -95.5, -88.0] {
            let want = (x as f64).exp() as f32;
            let got = exp(x);
            assert!(
                (got - want).abs() <= 2.0 * f32::from_bits(1),
                "exp({x}) = {got:e}, want {want:e}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-104.0), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert!(exp(88.72).is_finite());
        assert_eq!(exp(88.73), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }
}

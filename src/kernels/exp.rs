//! `e^x` for `f32` without branches, so that loops over it vectorise.
//!
//! `f32::exp` calls the C library's `expf` once per element: a [50, 100]
//! sigmoid spent 19 us (3.8 ns an element) there, more than the rest of its
//! op. This is the classic range reduction `e^x = 2^n * e^r`, `|r| <= ln2/2`,
//! with Cephes' degree-6 polynomial for `e^r` (within 2 ulp of the exact
//! value, tested below), and only arithmetic, `min`/`max` and bit casts: the
//! compiler turns a loop of it into SIMD code.

/// `log2(e)`.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split in two, so that `n * LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting `1.5 * 2^23` rounds to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `a * b + c`: one fused instruction where the CPU the crate is compiled
/// for has FMA (`-C target-cpu=native` on any x86-64 of the last decade),
/// two roundings otherwise (never the slow software `fma` of libm).
#[inline(always)]
pub fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x`, within 2 ulp; `+inf` above about 88.72, `0` below about -103.97
/// (denormals between), NaN for NaN.
///
/// ```
/// use adgraph::kernels::exp::exp;
/// assert_eq!(exp(0.0), 1.0);
/// assert!((exp(1.0) - std::f32::consts::E).abs() <= f32::EPSILON * 3.0);
/// assert_eq!(exp(100.0), f32::INFINITY);
/// assert_eq!(exp(-200.0), 0.0);
/// assert!(exp(f32::NAN).is_nan());
/// ```
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Clamped so that 2^n splits into two normal halves; a NaN stays NaN
    // through every step.
    let xc = x.clamp(-104.0, 89.0);
    // n = round(x / ln 2), as a float and, from the low bits of the rounding
    // sum, as an integer (no float-to-int conversion, which does not vectorise).
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let n_int = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = mul_add(p, r, 1.398_2e-3);
    p = mul_add(p, r, 8.333_452e-3);
    p = mul_add(p, r, 4.166_579_6e-2);
    p = mul_add(p, r, 1.666_666_5e-1);
    p = mul_add(p, r, 0.5); // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let y = mul_add(p * r, r, r) + 1.0;
    // 2^n as 2^(n/2) * 2^(n - n/2): each factor's exponent stays normal, and
    // the product over- or underflows only where e^x does.
    let half = n_int >> 1;
    let scale = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    y * scale(half) * scale(n_int - half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_two_ulp_of_the_exact_value_over_the_finite_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.7 {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            // An ulp of the f32 nearest to want.
            let ulp = f64::from(f32::EPSILON) * want.abs();
            worst = worst.max((got - want).abs() / ulp);
            x += 0.000_937;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    #[test]
    fn limits_and_special_values() {
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(88.8), f32::INFINITY);
        assert!(exp(88.7).is_finite());
        assert!(exp(-100.0) > 0.0 && exp(-100.0) < 1e-43);
        assert!((exp(-100.0) / 3.72e-44 - 1.0).abs() < 0.05);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(-0.0), 1.0);
    }
}

//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`): the grammar of
//! k8s.io/apimachinery's resource.Quantity, parsed to a value in milli-units so
//! validation and policy can compare them. Pure; never panics on input.
//!
//! Grammar (as in resource.Quantity):
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <sign><numericalDigits> | <numericalDigits>
//! <numericalDigits> ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedInteger> | "E" <signedInteger>
//! ```
//!
//! The exponent must fit an i64 (as Go's `strconv.ParseInt` requires). The value
//! is computed exactly on the decimal digits (no floating point), so the work is
//! linear in the length of the input whatever the exponent.

/// Parses a quantity; returns its value in thousandths of the base unit
/// (cpu: millicores; memory: milli-bytes), saturating at i128 bounds.
pub fn parse_milli(s: &str) -> Result<i128, String> {
    let parsed = split(s)?;
    Ok(parsed.milli())
}

/// A quantity split into its parts, before any arithmetic.
struct Parsed<'a> {
    negative: bool,
    int_digits: &'a str,
    frac_digits: &'a str,
    /// Power of ten applied by the suffix (decimalSI or exponent).
    dec_exp: i128,
    /// Power of 1024 applied by a binarySI suffix (0 for none).
    bin_pow: u32,
}

fn split(s: &str) -> Result<Parsed<'_>, String> {
    if s.is_empty() {
        return Err("empty quantity".into());
    }
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut negative = false;
    match bytes.first() {
        Some(b'-') => {
            negative = true;
            pos = 1;
        }
        Some(b'+') => pos = 1,
        _ => {}
    }
    let int_start = pos;
    while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    let int_digits = s.get(int_start..pos).unwrap_or("");
    let mut frac_digits = "";
    if bytes.get(pos) == Some(&b'.') {
        pos += 1;
        let frac_start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        frac_digits = s.get(frac_start..pos).unwrap_or("");
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(format!("{s:?} does not start with a number"));
    }
    let suffix = s.get(pos..).unwrap_or("");
    let (dec_exp, bin_pow) =
        suffix_scale(suffix).ok_or_else(|| format!("{s:?} has an unknown suffix {suffix:?}"))?;
    Ok(Parsed {
        negative,
        int_digits,
        frac_digits,
        dec_exp,
        bin_pow,
    })
}

/// (power of ten, power of 1024) for a suffix, or None if it is not one.
fn suffix_scale(suffix: &str) -> Option<(i128, u32)> {
    let scale = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            return parse_exponent(rest).map(|e| (i128::from(e), 0));
        }
    };
    Some(scale)
}

/// A signed decimal integer that fits an i64 (Go's ParseInt(s, 10, 64)).
fn parse_exponent(s: &str) -> Option<i64> {
    let digits = s
        .strip_prefix('-')
        .or_else(|| s.strip_prefix('+'))
        .unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

impl Parsed<'_> {
    /// ceil(value × 1000), saturating.
    fn milli(&self) -> i128 {
        // Decimal digits of the mantissa, most significant first, without
        // leading zeros; value = digits × 10^exp × 1024^bin_pow.
        let mut digits: Vec<u8> = self
            .int_digits
            .bytes()
            .chain(self.frac_digits.bytes())
            .map(|b| b - b'0')
            .skip_while(|&d| d == 0)
            .collect();
        if digits.is_empty() {
            return 0;
        }
        let frac_len = i128::try_from(self.frac_digits.len()).unwrap_or(i128::MAX);
        // Milli-units: one more factor of 10^3.
        let mut exp = self.dec_exp - frac_len + 3;
        for _ in 0..self.bin_pow {
            mul_small(&mut digits, 1024);
        }
        while digits.last() == Some(&0) {
            digits.pop();
            exp += 1;
        }
        let magnitude = if exp >= 0 {
            // An integer with len + exp digits; more than 39 cannot fit u128.
            let total = i128::try_from(digits.len()).unwrap_or(i128::MAX) + exp;
            if total > 39 {
                None
            } else {
                digits_to_u128(&digits).and_then(|m| {
                    let e = u32::try_from(exp).ok()?;
                    m.checked_mul(10u128.checked_pow(e)?)
                })
            }
        } else {
            // Integer part plus a fractional part that is non-zero (trailing
            // zeros were stripped): ceil for positive values, floor of the
            // magnitude for negative ones.
            let shift = exp.unsigned_abs();
            let len = digits.len() as u128;
            let int_part = if shift >= len {
                Some(0)
            } else {
                let keep = usize::try_from(len - shift).unwrap_or(digits.len());
                digits_to_u128(digits.get(..keep).unwrap_or(&[]))
            };
            if self.negative {
                int_part
            } else {
                int_part.and_then(|i| i.checked_add(1))
            }
        };
        match (magnitude, self.negative) {
            (Some(m), false) => i128::try_from(m).unwrap_or(i128::MAX),
            (None, false) => i128::MAX,
            (Some(m), true) => {
                if m > i128::MAX as u128 {
                    i128::MIN
                } else {
                    -(m as i128)
                }
            }
            (None, true) => i128::MIN,
        }
    }
}

/// digits (most significant first) × factor, in place.
fn mul_small(digits: &mut Vec<u8>, factor: u32) {
    let mut carry: u32 = 0;
    for d in digits.iter_mut().rev() {
        let v = u32::from(*d) * factor + carry;
        *d = (v % 10) as u8;
        carry = v / 10;
    }
    let mut prefix = Vec::new();
    while carry > 0 {
        prefix.push((carry % 10) as u8);
        carry /= 10;
    }
    prefix.reverse();
    if !prefix.is_empty() {
        prefix.append(digits);
        *digits = prefix;
    }
}

fn digits_to_u128(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u128::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_milli;

    #[test]
    fn valid_quantities() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("1", 1000),
            ("+1", 1000),
            ("-1", -1000),
            ("500m", 500),
            ("0.5", 500),
            (".5", 500),
            ("1.", 1000),
            ("1.5", 1500),
            ("1m", 1),
            ("0.1m", 1),
            ("0.0001m", 1),
            ("1.0001m", 2),
            ("1n", 1),
            ("1000000n", 1),
            ("1000001n", 2),
            ("1u", 1),
            ("1000u", 1),
            ("1k", 1_000_000),
            ("1M", 1_000_000_000),
            ("1G", 1_000_000_000_000),
            ("1T", 1_000_000_000_000_000),
            ("1P", 1_000_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000_000),
            ("1Ki", 1_024_000),
            ("1Mi", 1_048_576_000),
            ("512Mi", 512 * 1_048_576_000),
            ("1.5Gi", 1_610_612_736_000),
            ("1Ti", 1_099_511_627_776_000),
            ("1Pi", 1_125_899_906_842_624_000),
            ("1Ei", 1_152_921_504_606_846_976_000),
            ("0.001Ki", 1024),
            ("0.0001Ki", 103), // 102.4 rounds up
            ("2e3", 2_000_000),
            ("2E3", 2_000_000),
            ("2e+3", 2_000_000),
            ("2e-3", 2),
            ("1e-4", 1),
            ("1e-9999999", 1),
            ("0e9999999", 0),
            ("0.000", 0),
            ("000123", 123_000),
            ("1.2300", 1230),
            ("-1.5m", -1), // ceil
            ("-0.1m", 0),
            ("1e9999999", i128::MAX),
            ("-1e9999999", i128::MIN),
            ("1e35", 10i128.pow(38)),
            ("170141183460469231731687303715884105727m", i128::MAX),
            ("170141183460469231731687303715884105728m", i128::MAX),
            ("99999999999999999999999999999999999999999999", i128::MAX),
            ("1e36", i128::MAX),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_milli(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn long_inputs_are_exact() {
        let long_frac = format!("1.{}1", "0".repeat(10_000));
        assert_eq!(parse_milli(&long_frac), Ok(1001));
        let long_int = format!("{}1m", "0".repeat(10_000));
        assert_eq!(parse_milli(&long_int), Ok(1));
        let huge = format!("1{}", "0".repeat(10_000));
        assert_eq!(parse_milli(&huge), Ok(i128::MAX));
        let tiny = format!("0.{}1Ei", "0".repeat(10_000));
        assert_eq!(parse_milli(&tiny), Ok(1));
    }

    #[test]
    fn invalid_quantities() {
        let cases = [
            "",
            " ",
            " 1",
            "1 ",
            "1.2.3",
            "Mi",
            "1KB",
            "1K",
            "1e",
            "1e+",
            "1e1.5",
            "1e99999999999999999999",
            "--1",
            "+-1",
            "-",
            ".",
            "-.",
            "1mi",
            "1MM",
            "abc",
            "1,5",
            "0x10",
            "1Ki1",
            "1i",
            "١",
            "1\u{0}",
            "NaN",
            "inf",
        ];
        for input in cases {
            assert!(parse_milli(input).is_err(), "{input:?} should be rejected");
        }
    }
}

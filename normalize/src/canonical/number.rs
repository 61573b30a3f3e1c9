//! Numbers in the canonical text: the same text for the same value, a different text for
//! a different value, and serde_json's text wherever serde_json reads the number exactly.

/// Writes the canonical text of `literal`, a number in JSON's syntax; `integer` when it
/// has neither a fraction nor an exponent.
pub(super) fn write(literal: &str, integer: bool, out: &mut Vec<u8>) {
    if integer {
        // JSON integers have no leading zeros, so the digits are canonical already; `-0`
        // is the one serde_json reads as a double.
        let text = if literal == "-0" { "-0.0" } else { literal };
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let decimal = Decimal::of(literal);
    if decimal.digits.is_empty() {
        out.extend_from_slice(if decimal.negative { b"-0.0" } else { b"0.0" });
    } else if let Some(shortest) = as_double(literal, &decimal) {
        out.extend_from_slice(shortest.as_bytes());
    } else {
        decimal.write_exact(out);
    }
}

/// serde_json's text for the double nearest `literal`, when that text has exactly the
/// literal's value (then the double loses nothing).
fn as_double(literal: &str, decimal: &Decimal) -> Option<String> {
    if !matches!(decimal.exponent, Exponent::Small(_)) {
        return None;
    }
    // The standard library rounds correctly for any length of input.
    let double: f64 = literal.parse().ok()?;
    if !double.is_finite() || double == 0.0 {
        return None;
    }
    let text = serde_json::Number::from_f64(double)?.to_string();
    (Decimal::of(&text) == *decimal).then_some(text)
}

/// A number's value as sign, digits and exponent: `digits × 10^exponent`, with no leading
/// or trailing zero in `digits` (zero has none).
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: Exponent,
}

/// A power of ten. JSON allows any number of exponent digits, so it may not fit a machine
/// integer; whatever is added to it here is bounded by the body's length.
#[derive(Debug, PartialEq, Eq)]
enum Exponent {
    Small(i64),
    /// At least 10^18 in magnitude: ASCII digits without leading zeros.
    Big {
        negative: bool,
        digits: Vec<u8>,
    },
}

impl Decimal {
    /// `literal` must have JSON's number syntax.
    fn of(literal: &str) -> Decimal {
        let (negative, unsigned) = match literal.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, literal),
        };
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => (&unsigned[..at], Exponent::parse(&unsigned[at + 1..])),
            None => (unsigned, Exponent::Small(0)),
        };
        let (int, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits: Vec<u8> = int.bytes().chain(fraction.bytes()).collect();
        let trailing = digits.iter().rev().take_while(|&&d| d == b'0').count();
        digits.truncate(digits.len() - trailing);
        let leading = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..leading);
        let shift = trailing as i64 - fraction.len() as i64;
        Decimal {
            negative,
            digits,
            exponent: exponent.add(shift),
        }
    }

    /// `[-]D[.DDD]E<exponent>`: one digit before the point.
    fn write_exact(&self, out: &mut Vec<u8>) {
        if self.negative {
            out.push(b'-');
        }
        out.push(self.digits[0]);
        if self.digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&self.digits[1..]);
        }
        out.push(b'E');
        match self.exponent.add(self.digits.len() as i64 - 1) {
            Exponent::Small(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Exponent::Big { negative, digits } => {
                if negative {
                    out.push(b'-');
                }
                out.extend_from_slice(&digits);
            }
        }
    }
}

impl Exponent {
    /// `[+-]?[0-9]+`.
    fn parse(text: &str) -> Exponent {
        let (negative, digits) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let digits = digits.trim_start_matches('0');
        if digits.len() <= 17 {
            let n: i64 = digits.parse().unwrap_or(0);
            Exponent::Small(if negative { -n } else { n })
        } else {
            Exponent::Big {
                negative,
                digits: digits.as_bytes().to_vec(),
            }
        }
    }

    /// `self + delta`, where `|delta|` is far below 10^17.
    fn add(&self, delta: i64) -> Exponent {
        match self {
            Exponent::Small(n) => Exponent::Small(n + delta),
            Exponent::Big { negative, digits } => {
                // ±m + delta = ±(m ± delta), and m > |delta|: the sign stays.
                let delta = if *negative { -delta } else { delta };
                Exponent::Big {
                    negative: *negative,
                    digits: add_to_digits(digits, delta),
                }
            }
        }
    }
}

/// ASCII `digits` plus `delta`, where the result stays positive.
fn add_to_digits(digits: &[u8], delta: i64) -> Vec<u8> {
    let mut little_endian: Vec<i64> = digits.iter().rev().map(|d| i64::from(d - b'0')).collect();
    let mut carry = delta;
    for digit in &mut little_endian {
        if carry == 0 {
            break;
        }
        let sum = *digit + carry;
        *digit = sum.rem_euclid(10);
        carry = sum.div_euclid(10);
    }
    while carry > 0 {
        little_endian.push(carry % 10);
        carry /= 10;
    }
    while little_endian.len() > 1 && little_endian.last() == Some(&0) {
        little_endian.pop();
    }
    little_endian
        .iter()
        .rev()
        .map(|&d| b'0' + d as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(literal: &str) -> String {
        let integer = !literal.contains(['.', 'e', 'E']);
        let mut out = Vec::new();
        write(literal, integer, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_serde_json_reads_exactly_keep_its_text() {
        for literal in [
            "0",
            "-1",
            "12",
            "18446744073709551615",
            "-9223372036854775808",
            "-0",
            "0.0",
            "-0.0",
            "1.5",
            "15e-1",
            "1.50",
            "100.0",
            "1e2",
            "1E+2",
            "1e20",
            "1e-7",
            "0.1",
            "0.30000000000000004",
            "1.7976931348623157e308",
            "5e-324",
            "123456.789",
        ] {
            let value: serde_json::Value = serde_json::from_str(literal).unwrap();
            assert_eq!(text(literal), value.to_string(), "{literal}");
        }
    }

    #[test]
    fn integers_beyond_64_bits_keep_every_digit() {
        assert_eq!(text("18446744073709551616"), "18446744073709551616");
        assert_ne!(text("18446744073709551616"), text("18446744073709551617"));
        assert_eq!(text("-9223372036854775809"), "-9223372036854775809");
    }

    #[test]
    fn other_numbers_are_written_exactly_with_an_uppercase_e() {
        assert_eq!(text("1e400"), "1E400");
        assert_eq!(text("10e399"), "1E400");
        assert_eq!(text("-1.0e400"), "-1E400");
        assert_eq!(text("1e-400"), "1E-400");
        assert_eq!(text("0.10000000000000000001"), "1.0000000000000000001E-1");
        assert_ne!(text("0.10000000000000000001"), text("0.1"));
        assert_eq!(text("18446744073709551616.0"), "1.8446744073709551616E19");
        assert_ne!(text("18446744073709551616.0"), text("18446744073709551616"));
    }

    #[test]
    fn exponents_of_any_length_are_kept_exactly() {
        let huge = format!("1e{}", "9".repeat(40));
        assert_eq!(text(&huge), format!("1E{}", "9".repeat(40)));
        assert_eq!(
            text(&format!("0.5e{}", "9".repeat(40))),
            format!("5E{}8", "9".repeat(39))
        );
        assert_eq!(
            text(&format!("100e-{}", "9".repeat(40))),
            format!("1E-{}7", "9".repeat(39))
        );
        assert_eq!(text("1e0000000000000000000000000005"), "100000.0");
        assert_eq!(text("0e99999999999999999999999"), "0.0");
    }
}

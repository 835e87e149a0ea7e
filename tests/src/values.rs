//! Values that must cross every store unchanged (issue 7): the f64 range (subnormals,
//! extremes, `-0.0`, floats that a fast parser rounds wrongly), integer extremes and
//! strings with NUL, control and non-BMP characters; and a comparison that is exact to
//! the bit, which `serde_json::Value`'s `==` is not (it says `0.0 == -0.0`).

use serde_json::{json, Map, Value};

/// Floats that changed on the way through SQLite or PostgreSQL, or that a store could
/// rewrite: the three, subnormals, the extremes, negative zero, and values whose
/// shortest text has an exponent or many digits.
pub fn sample_floats() -> Vec<f64> {
    vec![
        f64::from_bits(0x3ff9_3e93_e93e_863b), // 1.5777777777770001, from the issue
        0.091_443_385_120_928_87,
        0.914_615_523_521_910_7,
        5e-324,                                // the smallest subnormal
        f64::from_bits(0x000f_ffff_ffff_ffff), // the largest subnormal
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        -0.0,
        0.0,
        0.1,
        1e20,
        -1e-300,
        f64::EPSILON,
        9_007_199_254_740_992.0, // 2^53
        1.0,
        -2.5,
    ]
}

/// Integers at the edges of what JSON numbers in taskq hold.
pub fn sample_ints() -> Value {
    json!({
        "i64_min": i64::MIN,
        "i64_max": i64::MAX,
        "u64_max": u64::MAX,
        "zero": 0,
        "minus_one": -1,
        "two_pow_53_plus_one": 9_007_199_254_740_993_u64,
    })
}

/// Strings a database may refuse or rewrite: NUL, every other C0 control, DEL, the line
/// and paragraph separators, non-BMP characters, quotes and backslashes.
pub fn sample_strings() -> Vec<String> {
    let c0: String = (0u8..0x20).map(char::from).collect();
    vec![
        "bin\0ary".to_string(),
        "\0".to_string(),
        c0,
        "\u{7f}\u{80}\u{9f}".to_string(),
        "\u{2028}\u{2029}".to_string(),
        "😀 𝄞 \u{10FFFF}".to_string(),
        "\u{FFFF}\u{FEFF}".to_string(),
        "it's \"quoted\" \\ back\\slashed".to_string(),
        String::new(),
    ]
}

/// One JSON value holding every sample, as an argument, filter or cursor would.
pub fn sample_value() -> Value {
    let floats: Vec<Value> = sample_floats().into_iter().map(float).collect();
    let mut keys = Map::new();
    // Keys are strings too: a NUL or a non-BMP character in a key must survive as well.
    keys.insert("nul\0key".into(), json!(1));
    keys.insert("😀".into(), json!(2));
    json!({
        "floats": floats,
        "ints": sample_ints(),
        "strings": sample_strings(),
        "keys": Value::Object(keys),
        "nested": { "a": [[[{ "f": float(-0.0), "s": "\0" }]]] },
        "null": null,
        "bools": [true, false],
    })
}

/// A JSON number holding exactly `f` (finite).
pub fn float(f: f64) -> Value {
    match serde_json::Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None => panic!("{f} is not finite"),
    }
}

/// A value nested `depth` levels deep: `[[..[0]..]]`.
pub fn nested(depth: usize) -> Value {
    let mut v = json!(0);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// Where `a` and `b` differ, to the bit: numbers must have the same kind (unsigned,
/// signed, float) and the same value, floats the same bits. `None` when identical.
pub fn bit_difference(a: &Value, b: &Value) -> Option<String> {
    diff(a, b, "$")
}

/// Panics, naming the path, unless `got` is bit-identical to `want`.
#[track_caller]
pub fn assert_bit_identical(got: &Value, want: &Value, what: &str) {
    if let Some(d) = bit_difference(got, want) {
        panic!("{what} changed on the way through the store: {d}");
    }
}

fn diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let same = match (x.as_u64(), y.as_u64(), x.as_i64(), y.as_i64()) {
                (Some(p), Some(q), _, _) => p == q,
                (_, _, Some(p), Some(q)) if !x.is_f64() && !y.is_f64() => p == q,
                _ => {
                    x.is_f64() == y.is_f64()
                        && x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits)
                }
            };
            (!same).then(|| {
                format!(
                    "at {path}: {x} ({}) became {y} ({})",
                    describe(x),
                    describe(y)
                )
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("at {path}: {} items became {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (p, q))| diff(p, q, &format!("{path}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<&String> = x.keys().collect();
            let ky: Vec<&String> = y.keys().collect();
            if kx != ky {
                return Some(format!("at {path}: keys {kx:?} became {ky:?}"));
            }
            x.iter()
                .find_map(|(k, p)| diff(p, &y[k], &format!("{path}.{k:?}")))
        }
        _ => (a != b).then(|| format!("at {path}: {a:?} became {b:?}")),
    }
}

fn describe(n: &serde_json::Number) -> String {
    if let Some(u) = n.as_u64() {
        format!("u64 {u}")
    } else if let Some(i) = n.as_i64() {
        format!("i64 {i}")
    } else {
        match n.as_f64() {
            Some(f) => format!("f64 bits {:#018x}", f.to_bits()),
            None => "?".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_sees_negative_zero_and_a_last_bit() {
        assert!(bit_difference(&float(0.0), &float(-0.0)).is_some());
        assert!(bit_difference(&float(1.5777777777770001), &float(1.577777777777)).is_some());
        assert!(bit_difference(&json!(1), &float(1.0)).is_some());
        assert!(bit_difference(&sample_value(), &sample_value()).is_none());
    }
}

//! Unique keys (issue 13, `taskq_runtime::unique`): equal values give the same key
//! whatever order their objects' keys come in and however their whole numbers are written
//! (`1` or `1.0`), and unequal chosen arguments give different keys. 256 cases;
//! `PROPTEST_CASES=N` runs N.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;
use taskq_runtime::unique::{canonical_json, key, UniqueArgs};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "[a-z\u{e9}\"\\\\ ]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-e]{1,2}", inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// `v` as JSON text written another way: object keys in reverse order, and whole
/// numbers small enough to stay exact as an `f64` written with a fraction (`3.0`).
fn written_otherwise(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .rev()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), written_otherwise(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(written_otherwise)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() <= 1 << 53 => format!("{i}.0"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn equal_values_in_any_key_order_give_one_key(v in json_value()) {
        let text = written_otherwise(&v);
        let back: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(canonical_json(&v), canonical_json(&back), "{}", text);
        let args = |x: &Value| serde_json::json!({ "a": x.clone(), "b": 1 });
        prop_assert_eq!(
            key("t", "q", &args(&v), &UniqueArgs::All),
            key("t", "q", &args(&back), &UniqueArgs::All)
        );
        // Canonical text is a fixed point: read back and written again, it is unchanged.
        let canon = canonical_json(&v);
        let reread: Value = serde_json::from_str(&canon).map_err(|e| TestCaseError::fail(format!("{e}: {canon}")))?;
        prop_assert_eq!(canonical_json(&reread), canon);
    }

    #[test]
    fn different_chosen_arguments_give_different_keys(a in json_value(), b in json_value(), other in json_value()) {
        prop_assume!(canonical_json(&a) != canonical_json(&b));
        let only = UniqueArgs::Only(vec!["x".into()]);
        let ka = key("t", "q", &serde_json::json!({ "x": a, "y": other.clone() }), &only);
        let kb = key("t", "q", &serde_json::json!({ "x": b, "y": other }), &only);
        prop_assert!(ka.is_ok());
        prop_assert_ne!(ka, kb);
    }
}

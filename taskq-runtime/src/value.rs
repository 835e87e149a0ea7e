//! The values taskq stores for you — task arguments, an iterative run's filter and its
//! cursor (the model's `Key`) — and the rules they follow on every store.
//!
//! - **Exact.** Each is stored as JSON text and decoded by taskq itself, so it comes back
//!   bit-identical on memory, SQLite and PostgreSQL: every finite `f64` (subnormals,
//!   `f64::MAX`, `-0.0`, ...), every `i64` and `u64`, and any string, NUL bytes, other
//!   control characters and non-BMP characters included (JSON escapes them).
//! - **Finite numbers only.** JSON has no NaN or infinity, and serde_json would silently
//!   store `null` for them. taskq refuses them instead: `start()` returns
//!   [`StartError::Serialize`](crate::StartError::Serialize) naming the argument (and
//!   where inside it, e.g. `point.y`), and nothing is stored; a cursor that holds one
//!   fails its iterative step fatally, naming the cursor, before the batch runs.
//! - **Nested at most [`MAX_VALUE_DEPTH`] levels** of arrays and objects, so that every
//!   store can read back what it accepted (the JSON parser refuses to go deeper than 128
//!   levels). Deeper values are refused the same way as NaN. The stores themselves refuse
//!   a stored document (a payload, with its wrapping object, or a filter or cursor) deeper
//!   than [`MAX_DEPTH`] with [`StoreError::InvalidValue`](crate::store::StoreError::InvalidValue).
//! - **At most [`MAX_PAYLOAD_BYTES`] of JSON** (16 MiB) for a task's payload (its
//!   arguments, with the wrapping object), an iterative run's filter and its cursor, the
//!   same on every store: `start()` fails with
//!   [`StartError::Store`](crate::StartError::Store) holding
//!   [`StoreError::InvalidValue`](crate::store::StoreError::InvalidValue), which names the
//!   task, its largest argument, the size and the limit, and nothing is stored. A value
//!   that large is better kept elsewhere (a file, an object store) and passed by key.
//! - **Names** (task name, queue, de-duplication name) must not contain a NUL byte, which
//!   PostgreSQL cannot store in text, and are at most [`MAX_NAME_BYTES`] long (PostgreSQL
//!   indexes them): every store refuses others with
//!   [`StoreError::InvalidValue`](crate::store::StoreError::InvalidValue), in `enqueue`
//!   and in the queue management calls alike.

use std::fmt;

use serde::ser::{self, Serialize, Serializer};

/// The deepest a stored JSON document may nest arrays and objects: a task's payload (the
/// object of its arguments, and for an iterative task `{"filter": .., "args": {..}}`
/// around them), an iteration's filter, or its cursor. A scalar is 0 levels deep, `[1]`
/// one, `{"a": [1]}` two. Every store's `enqueue` and `checkpoint` refuse deeper values;
/// 100 stays well inside the 128 levels serde_json parses, so every store can read back
/// what it accepted.
pub const MAX_DEPTH: usize = 100;

/// The longest task name, queue name or de-duplication name a store keeps, in bytes of
/// UTF-8. PostgreSQL indexes queue and de-duplication names, and one B-tree index entry
/// holds at most about 2.7 KB; every store refuses a longer name the same way, so a name
/// one store keeps is kept by all.
pub const MAX_NAME_BYTES: usize = 1024;

/// The largest JSON document a store keeps, in bytes of the JSON text taskq writes: a
/// task's payload (the object of its arguments, and for an iterative task the
/// `{"filter": .., "args": {..}}` around them), an iteration's filter, or its cursor.
/// Every store's `enqueue` and `checkpoint` refuse a larger one with
/// [`StoreError::InvalidValue`](crate::store::StoreError::InvalidValue), so a value one
/// store keeps is kept by all. 16 MiB: far below what the databases take (PostgreSQL's
/// `json` up to 1 GB, SQLite's default 1,000,000,000 bytes), because a worker holds the
/// payload of every task it claims (`claim_batch` of them at once) and the database
/// stores send each claimed payload in one result.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The deepest one value you hand taskq may nest: an argument, a filter, or a model key
/// (the cursor). [`MAX_DEPTH`] less the two levels a payload may wrap it in (the payload
/// object, and an iterative task's `args` object).
pub const MAX_VALUE_DEPTH: usize = MAX_DEPTH - 2;

/// The length in bytes of `v` as JSON text, as the stores write it (`v.to_string()`),
/// counted without building the text.
pub fn json_len(v: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a `Value` cannot fail (its map keys are strings), and `Count` never fails.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Turns `value` into JSON the way taskq stores it, refusing what would not come back
/// unchanged: NaN and ±infinity (anywhere inside it), and nesting deeper than `max_depth`
/// levels of arrays and objects (taskq uses [`MAX_VALUE_DEPTH`]). `name` is how errors
/// refer to the value (`x` in ``"`x.points[3]` is NaN"``).
///
/// The checks run while serialising, in the same pass that builds the JSON.
///
/// # Errors
/// A message for people: where the offending number sits and why it is refused, how
/// deep the value nests, or serde_json's own message (a map with non-string keys, ...).
pub fn to_json<T: Serialize + ?Sized>(
    value: &T,
    name: &str,
    max_depth: usize,
) -> Result<serde_json::Value, String> {
    value
        .serialize(Check {
            inner: serde_json::value::Serializer,
            at: At {
                root: name,
                max_depth,
                path: Path::Root,
                depth: 0,
            },
        })
        .map_err(|e| e.to_string())
}

/// How many levels of arrays and objects `v` nests (a scalar: 0). Iterative, so that a
/// value of any depth is measured without deep recursion.
pub(crate) fn depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&serde_json::Value, usize)> = vec![(v, 0)];
    while let Some((v, d)) = stack.pop() {
        match v {
            serde_json::Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            serde_json::Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Where inside the value the serializer is, as a linked list up to the root: built on
/// the stack, so tracking it costs no allocation (only a map key is rendered, once).
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'static str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

/// The position of a value: the root's name, the limit, the path and the levels of
/// arrays and objects around it.
#[derive(Clone, Copy)]
struct At<'a> {
    root: &'a str,
    max_depth: usize,
    path: Path<'a>,
    depth: usize,
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn walk(p: &Path<'_>, root: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match p {
                Path::Root => f.write_str(root),
                Path::Field(up, name) => {
                    walk(up, root, f)?;
                    write!(f, ".{name}")
                }
                Path::Index(up, i) => {
                    walk(up, root, f)?;
                    write!(f, "[{i}]")
                }
                Path::Key(up, key) => {
                    walk(up, root, f)?;
                    write!(f, "[{key}]")
                }
            }
        }
        walk(&self.path, self.root, f)
    }
}

impl<'a> At<'a> {
    /// The same place, inside `levels` more arrays or objects: refused past the limit.
    fn open<E: ser::Error>(self, levels: usize) -> Result<At<'a>, E> {
        let depth = self.depth + levels;
        if depth > self.max_depth {
            return Err(E::custom(format!(
                "`{}` nests arrays and objects more than {} levels deep; taskq stores values nested at most {} levels (taskq_runtime::value::MAX_VALUE_DEPTH), so that every store can read back what it accepted",
                self.root, self.max_depth, self.max_depth
            )));
        }
        Ok(At { depth, ..self })
    }

    fn finite<E: ser::Error>(&self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            return Ok(());
        }
        let what = if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "+infinity"
        } else {
            "-infinity"
        };
        Err(E::custom(format!(
            "`{self}` is {what}: JSON has no NaN or infinity (serde_json would store null), so taskq refuses to store it"
        )))
    }

    fn with<'b>(&self, path: Path<'b>) -> At<'b>
    where
        'a: 'b,
    {
        At {
            root: self.root,
            max_depth: self.max_depth,
            path,
            depth: self.depth,
        }
    }
}

/// A serializer that checks each number and each level of nesting, then hands the value
/// on to `inner` (serde_json's), so the JSON is built in the same pass.
struct Check<'a, S> {
    inner: S,
    at: At<'a>,
}

/// A value to serialize at a known place.
struct Wrap<'a, 'v, T: ?Sized> {
    value: &'v T,
    at: At<'a>,
}

impl<T: Serialize + ?Sized> Serialize for Wrap<'_, '_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Check {
            inner: s,
            at: self.at,
        })
    }
}

impl<'a, S: Serializer> Serializer for Check<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    fn serialize_bool(self, v: bool) -> Result<S::Ok, S::Error> {
        self.inner.serialize_bool(v)
    }
    fn serialize_i8(self, v: i8) -> Result<S::Ok, S::Error> {
        self.inner.serialize_i8(v)
    }
    fn serialize_i16(self, v: i16) -> Result<S::Ok, S::Error> {
        self.inner.serialize_i16(v)
    }
    fn serialize_i32(self, v: i32) -> Result<S::Ok, S::Error> {
        self.inner.serialize_i32(v)
    }
    fn serialize_i64(self, v: i64) -> Result<S::Ok, S::Error> {
        self.inner.serialize_i64(v)
    }
    fn serialize_i128(self, v: i128) -> Result<S::Ok, S::Error> {
        self.inner.serialize_i128(v)
    }
    fn serialize_u8(self, v: u8) -> Result<S::Ok, S::Error> {
        self.inner.serialize_u8(v)
    }
    fn serialize_u16(self, v: u16) -> Result<S::Ok, S::Error> {
        self.inner.serialize_u16(v)
    }
    fn serialize_u32(self, v: u32) -> Result<S::Ok, S::Error> {
        self.inner.serialize_u32(v)
    }
    fn serialize_u64(self, v: u64) -> Result<S::Ok, S::Error> {
        self.inner.serialize_u64(v)
    }
    fn serialize_u128(self, v: u128) -> Result<S::Ok, S::Error> {
        self.inner.serialize_u128(v)
    }
    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        self.at.finite(f64::from(v))?;
        self.inner.serialize_f32(v)
    }
    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        self.at.finite(v)?;
        self.inner.serialize_f64(v)
    }
    fn serialize_char(self, v: char) -> Result<S::Ok, S::Error> {
        self.inner.serialize_char(v)
    }
    fn serialize_str(self, v: &str) -> Result<S::Ok, S::Error> {
        self.inner.serialize_str(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<S::Ok, S::Error> {
        // serde_json writes bytes as an array of numbers: one level.
        self.at.open::<S::Error>(1)?;
        self.inner.serialize_bytes(v)
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_none()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_some(&Wrap { value, at: self.at })
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner
            .serialize_newtype_struct(name, &Wrap { value, at: self.at })
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        // `{"Variant": value}`: one object around the value.
        let at = self.at.open::<S::Error>(1)?;
        let path = Path::Field(&at.path, variant);
        self.inner.serialize_newtype_variant(
            name,
            index,
            variant,
            &Wrap {
                value,
                at: at.with(path),
            },
        )
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let at = self.at.open::<S::Error>(1)?;
        Ok(Compound::new(self.inner.serialize_seq(len)?, at))
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let at = self.at.open::<S::Error>(1)?;
        Ok(Compound::new(self.inner.serialize_tuple(len)?, at))
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let at = self.at.open::<S::Error>(1)?;
        Ok(Compound::new(
            self.inner.serialize_tuple_struct(name, len)?,
            at,
        ))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        // `{"Variant": [..]}`: an object and an array.
        let at = self.at.open::<S::Error>(2)?;
        let mut c = Compound::new(
            self.inner
                .serialize_tuple_variant(name, index, variant, len)?,
            at,
        );
        c.variant = Some(variant);
        Ok(c)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let at = self.at.open::<S::Error>(1)?;
        Ok(Compound::new(self.inner.serialize_map(len)?, at))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let at = self.at.open::<S::Error>(1)?;
        Ok(Compound::new(self.inner.serialize_struct(name, len)?, at))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        // `{"Variant": {..}}`: two objects.
        let at = self.at.open::<S::Error>(2)?;
        let mut c = Compound::new(
            self.inner
                .serialize_struct_variant(name, index, variant, len)?,
            at,
        );
        c.variant = Some(variant);
        Ok(c)
    }
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// An array or object being serialized; its items sit one level deeper than it.
struct Compound<'a, C> {
    inner: C,
    /// The place of the items (already counted one level in).
    at: At<'a>,
    /// The next item's index.
    index: usize,
    /// The variant name of an enum's tuple or struct variant (a path segment).
    variant: Option<&'static str>,
    /// The current map key, rendered as JSON, for paths.
    key: Option<String>,
}

impl<'a, C> Compound<'a, C> {
    fn new(inner: C, at: At<'a>) -> Compound<'a, C> {
        Compound {
            inner,
            at,
            index: 0,
            variant: None,
            key: None,
        }
    }
}

/// Serializes one item of a compound: `$at` is its place, at the path `$path` built from
/// `$base` (the compound's path, with an enum variant's name when it has one).
macro_rules! item {
    ($self:ident, |$base:ident| $path:expr, |$at:ident| $call:expr) => {{
        let variant_path;
        let $base: &Path<'_> = match $self.variant {
            Some(v) => {
                variant_path = Path::Field(&$self.at.path, v);
                &variant_path
            }
            None => &$self.at.path,
        };
        let $at = $self.at.with($path);
        $call
    }};
}

/// The next item's index.
fn next<C>(c: &mut Compound<'_, C>) -> usize {
    c.index += 1;
    c.index - 1
}

impl<C: ser::SerializeSeq> ser::SerializeSeq for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let i = next(self);
        item!(self, |base| Path::Index(base, i), |at| self
            .inner
            .serialize_element(&Wrap { value, at }))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTuple> ser::SerializeTuple for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let i = next(self);
        item!(self, |base| Path::Index(base, i), |at| self
            .inner
            .serialize_element(&Wrap { value, at }))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleStruct> ser::SerializeTupleStruct for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let i = next(self);
        item!(self, |base| Path::Index(base, i), |at| self
            .inner
            .serialize_field(&Wrap { value, at }))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleVariant> ser::SerializeTupleVariant for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let i = next(self);
        item!(self, |base| Path::Index(base, i), |at| self
            .inner
            .serialize_field(&Wrap { value, at }))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        // Keys are scalars (serde_json refuses others); rendered only to name a place.
        self.key = serde_json::to_string(key).ok();
        let at = self.at;
        self.inner.serialize_key(&Wrap { value: key, at })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let key = self.key.take().unwrap_or_else(|| "?".to_string());
        let at = self.at.with(Path::Key(&self.at.path, &key));
        self.inner.serialize_value(&Wrap { value, at })
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStruct> ser::SerializeStruct for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        item!(self, |base| Path::Field(base, name), |at| self
            .inner
            .serialize_field(name, &Wrap { value, at }))
    }
    fn skip_field(&mut self, name: &'static str) -> Result<(), C::Error> {
        self.inner.skip_field(name)
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStructVariant> ser::SerializeStructVariant for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        item!(self, |base| Path::Field(base, name), |at| self
            .inner
            .serialize_field(name, &Wrap { value, at }))
    }
    fn skip_field(&mut self, name: &'static str) -> Result<(), C::Error> {
        self.inner.skip_field(name)
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Point {
        x: f64,
        y: f32,
    }

    #[derive(Serialize)]
    enum Shape {
        Dot(f64),
        Line(f64, f64),
        Box { w: f64, h: f64 },
    }

    fn err<T: Serialize + ?Sized>(v: &T) -> String {
        match to_json(v, "arg", MAX_VALUE_DEPTH) {
            Ok(j) => panic!("accepted: {j}"),
            Err(e) => e,
        }
    }

    #[test]
    fn finite_values_serialize_as_serde_json_does() {
        let v = (vec![1.5f64, -0.0, 5e-324], "a\0b", Some(u64::MAX), i64::MIN);
        assert_eq!(
            to_json(&v, "arg", MAX_VALUE_DEPTH),
            Ok(serde_json::to_value(&v).expect("json"))
        );
    }

    #[test]
    fn non_finite_numbers_are_refused_with_their_place() {
        assert!(err(&f64::NAN).starts_with("`arg` is NaN"));
        let e = err(&Point {
            x: 1.0,
            y: f32::INFINITY,
        });
        assert!(e.starts_with("`arg.y` is +infinity"), "{e}");
        let e = err(&vec![vec![1.0], vec![2.0, f64::NEG_INFINITY]]);
        assert!(e.starts_with("`arg[1][1]` is -infinity"), "{e}");
        let mut m = std::collections::BTreeMap::new();
        m.insert("k", f64::NAN);
        let e = err(&m);
        assert!(e.starts_with("`arg[\"k\"]` is NaN"), "{e}");
        assert!(err(&Shape::Dot(f64::NAN)).starts_with("`arg.Dot` is NaN"));
        let e = err(&Shape::Line(1.0, f64::NAN));
        assert!(e.starts_with("`arg.Line[1]` is NaN"), "{e}");
        let e = err(&Shape::Box {
            w: 1.0,
            h: f64::INFINITY,
        });
        assert!(e.starts_with("`arg.Box.h` is +infinity"), "{e}");
        assert!(err(&Some(f64::NAN)).starts_with("`arg` is NaN"));
    }

    fn nested(levels: usize) -> serde_json::Value {
        let mut v = serde_json::json!(0);
        for _ in 0..levels {
            v = serde_json::Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn depth_is_counted_as_json_nests() {
        assert_eq!(depth(&serde_json::json!(1)), 0);
        assert_eq!(depth(&serde_json::json!({ "a": [1, [2]] })), 3);
        assert_eq!(depth(&nested(500)), 500);
        assert!(to_json(&nested(MAX_VALUE_DEPTH), "arg", MAX_VALUE_DEPTH).is_ok());
        let e = err(&nested(MAX_VALUE_DEPTH + 1));
        assert!(e.contains("more than 98 levels"), "{e}");
        // Enum variants add their wrapping object (and array) to the count.
        assert!(to_json(&Shape::Line(1.0, 2.0), "arg", 2).is_ok());
        assert!(to_json(&Shape::Line(1.0, 2.0), "arg", 1).is_err());
        assert!(to_json(&Shape::Dot(1.0), "arg", 1).is_ok());
        assert!(to_json(&Shape::Dot(1.0), "arg", 0).is_err());
    }
}

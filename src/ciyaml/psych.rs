//! YAML loaded with the meaning GitLab gives it. GitLab reads CI files with Ruby's Psych
//! (`YAML.safe_load(..., aliases: true)`), whose mapping construction (`revive_hash`) differs
//! from the YAML 1.1 merge-key draft in two ways that real pipelines rely on:
//! - a repeated key is not an error: the later value replaces the earlier one, in place;
//! - each `<<` entry is merged, in order, over what the mapping holds so far (`merge!`), so
//!   `<<: *build` then `<<: *upload` is valid and `upload` wins where both set a key. A
//!   sequence `<<: [*a, *b]` is folded right to left first, so there `a` wins. A `<<` whose
//!   value is not a mapping (or a sequence of them) is kept as an ordinary `<<` key.
//!
//! yaml_serde's own `Value` refuses repeated keys, so this is a serde visitor over
//! yaml_serde's deserializer (which still does the YAML parsing and alias expansion).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use yaml_serde::value::{Tag, TaggedValue};
use yaml_serde::{Mapping, Value};

/// How to build mappings.
#[derive(Clone, Copy)]
pub(super) struct Load {
    /// Apply `<<` as Psych does; otherwise keep the last `<<` as written (the "raw" view,
    /// which tells a key written in a mapping from one merged into it).
    pub merge: bool,
}

impl<'de> DeserializeSeed<'de> for Load {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Load {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut hash = Mapping::new();
        while let Some(key) = map.next_key_seed(self)? {
            let value = map.next_value_seed(self)?;
            if self.merge && key.as_str() == Some("<<") {
                merge_key(&mut hash, value);
            } else {
                // Ruby's `Hash#[]=`: a repeated key keeps its place and takes the new value.
                hash.insert(key, value);
            }
        }
        Ok(Value::Mapping(hash))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents) = data.variant::<String>()?;
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue { tag: Tag::new(tag), value })))
    }
}

/// `revive_hash`'s `<<` branch.
fn merge_key(hash: &mut Mapping, value: Value) {
    match value {
        Value::Mapping(m) => merge_into(hash, m),
        Value::Sequence(items) if items.iter().all(Value::is_mapping) => {
            // `val.reverse_each { |v| h.merge! v }`, then `hash.merge! h`.
            let mut h = Mapping::new();
            for item in items.into_iter().rev() {
                if let Value::Mapping(m) = item {
                    merge_into(&mut h, m);
                }
            }
            merge_into(hash, h);
        }
        // A TypeError in Ruby: the `<<` stays an ordinary key.
        other => {
            hash.insert(Value::String("<<".into()), other);
        }
    }
}

/// Ruby's `Hash#merge!`: existing keys keep their place and take the new value; new keys go
/// to the end.
fn merge_into(hash: &mut Mapping, from: Mapping) {
    for (k, v) in from {
        hash.insert(k, v);
    }
}

/// Every configuration document of `body`, as Psych builds them.
pub(super) fn documents(body: &str, merge: bool) -> Result<Vec<Value>, yaml_serde::Error> {
    yaml_serde::Deserializer::from_str(body).map(|doc| Load { merge }.deserialize(doc)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Value {
        documents(text, true).unwrap().pop().unwrap()
    }

    fn yaml(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    #[test]
    fn repeated_merge_keys_merge_in_order_later_wins() {
        let v = load(
            ".build: &build {image: docker, script: [b], stage: build}\n.upload: &upload {script: [u], when: manual}\njob:\n  <<: *build\n  <<: *upload\n  stage: test\n",
        );
        assert_eq!(v["job"], yaml("{image: docker, script: [u], stage: test, when: manual}"));
    }

    #[test]
    fn a_merge_after_an_explicit_key_overrides_it_as_psych_does() {
        let v = load(".t: &t {script: [from-template]}\njob:\n  script: [own]\n  <<: *t\n");
        assert_eq!(v["job"]["script"], yaml("[from-template]"));
    }

    #[test]
    fn a_merge_sequence_lets_the_first_mapping_win() {
        let v = load(".a: &a {x: 1, y: 1}\n.b: &b {x: 2, z: 2}\njob:\n  <<: [*a, *b]\n");
        assert_eq!(v["job"], yaml("{x: 1, z: 2, y: 1}"));
    }

    #[test]
    fn a_repeated_ordinary_key_keeps_its_place_and_the_last_value() {
        let v = load("job:\n  script: [one]\n  stage: build\n  script: [two]\n");
        let keys: Vec<&str> = v["job"].as_mapping().unwrap().keys().filter_map(Value::as_str).collect();
        assert_eq!(keys, ["script", "stage"]);
        assert_eq!(v["job"]["script"], yaml("[two]"));
    }

    #[test]
    fn a_merge_of_a_scalar_stays_an_ordinary_key_and_tags_survive() {
        let v = load("job:\n  <<: 3\n  script: !reference [.setup, script]\n");
        assert_eq!(v["job"]["<<"], yaml("3"));
        assert!(matches!(&v["job"]["script"], Value::Tagged(t) if t.tag == "!reference"), "{v:?}");
    }

    #[test]
    fn without_merging_the_mapping_is_as_written() {
        let v = documents("job:\n  <<: {a: 1}\n  b: 2\n", false).unwrap().pop().unwrap();
        assert_eq!(v["job"], yaml("{'<<': {a: 1}, b: 2}"));
    }
}

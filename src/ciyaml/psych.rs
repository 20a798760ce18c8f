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

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use yaml_serde::value::{Tag, TaggedValue};
use yaml_serde::{Mapping, Value};

/// One document, loaded. Besides the data it notes which top-level keys write `tags`
/// themselves (not through a merge key): the report says where a job's tags come from.
#[derive(Clone, Copy)]
struct Load<'a> {
    /// 0 for the document's top level.
    depth: u32,
    /// Set by a mapping at depth 1: it writes `tags` itself, after any merge that brings some.
    wrote_tags: &'a Cell<bool>,
    own_tags: &'a RefCell<BTreeSet<String>>,
    /// Some mapping repeats an ordinary key.
    repeated: &'a Cell<bool>,
}

impl Load<'_> {
    fn child(self) -> Self {
        Load { depth: self.depth.saturating_add(1), ..self }
    }
}

impl<'de> DeserializeSeed<'de> for Load<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Load<'_> {
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
        while let Some(v) = seq.next_element_seed(self.child())? {
            out.push(v);
        }
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut hash = Mapping::new();
        let mut wrote_tags = false;
        // The keys this mapping writes itself, kept only once a merge has mixed others in
        // (before that, every key in `hash` is one).
        let mut written: Option<Vec<Value>> = None;
        if self.depth == 0 {
            self.own_tags.borrow_mut().clear();
        }
        while let Some(key) = map.next_key_seed(self.child())? {
            self.wrote_tags.set(false);
            let value = map.next_value_seed(self.child())?;
            if self.depth == 0
                && let Some(name) = key.as_str()
            {
                let mut own = self.own_tags.borrow_mut();
                if self.wrote_tags.get() {
                    own.insert(name.to_string());
                } else {
                    own.remove(name);
                }
            }
            if key.as_str() == Some("<<") {
                written.get_or_insert_with(|| hash.keys().cloned().collect());
                if merge_key(&mut hash, value) {
                    wrote_tags = false;
                }
            } else {
                wrote_tags |= key.as_str() == Some("tags");
                let repeats = match &mut written {
                    Some(w) if w.contains(&key) => true,
                    Some(w) => {
                        w.push(key.clone());
                        false
                    }
                    None => hash.contains_key(&key),
                };
                if repeats {
                    self.repeated.set(true);
                }
                // Ruby's `Hash#[]=`: a repeated key keeps its place and takes the new value.
                hash.insert(key, value);
            }
        }
        if self.depth == 1 {
            self.wrote_tags.set(wrote_tags);
        }
        Ok(Value::Mapping(hash))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents) = data.variant::<String>()?;
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue { tag: Tag::new(tag), value })))
    }
}

/// `revive_hash`'s `<<` branch; true when the merge brought a `tags` key.
fn merge_key(hash: &mut Mapping, value: Value) -> bool {
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
            merge_into(hash, h)
        }
        // A TypeError in Ruby: the `<<` stays an ordinary key.
        other => {
            hash.insert(Value::String("<<".into()), other);
            false
        }
    }
}

/// Ruby's `Hash#merge!`: existing keys keep their place and take the new value; new keys go
/// to the end. True when `from` has `tags`.
fn merge_into(hash: &mut Mapping, from: Mapping) -> bool {
    let tags = from.contains_key("tags");
    for (k, v) in from {
        hash.insert(k, v);
    }
    tags
}

/// Documents as Psych builds them.
pub(super) struct Loaded {
    pub docs: Vec<Value>,
    /// The top-level keys of the last document whose mapping writes `tags` itself.
    pub own_tags: BTreeSet<String>,
    /// Some mapping repeats an ordinary key (GitLab keeps the last value).
    pub repeated_keys: bool,
}

/// Every document of `body` as Psych builds it.
pub(super) fn documents(body: &str) -> Result<Loaded, yaml_serde::Error> {
    let wrote_tags = Cell::new(false);
    let own_tags = RefCell::new(BTreeSet::new());
    let repeated = Cell::new(false);
    let load = Load { depth: 0, wrote_tags: &wrote_tags, own_tags: &own_tags, repeated: &repeated };
    let docs = yaml_serde::Deserializer::from_str(body).map(|doc| load.deserialize(doc)).collect::<Result<_, _>>()?;
    Ok(Loaded { docs, own_tags: own_tags.into_inner(), repeated_keys: repeated.get() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Value {
        documents(text).unwrap().docs.pop().unwrap()
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
    fn own_tags_are_those_a_job_writes_after_any_merge_that_brings_tags() {
        let text = ".t: &t {tags: [t]}\nown:\n  tags: [o]\nmerged:\n  <<: *t\nmerged_then_own:\n  <<: *t\n  tags: [o]\nown_then_merged:\n  tags: [o]\n  <<: *t\nnested:\n  x: {tags: [n]}\n";
        let loaded = documents(text).unwrap();
        assert_eq!(loaded.own_tags.into_iter().collect::<Vec<_>>(), [".t", "merged_then_own", "own"]);
        assert!(!loaded.repeated_keys);
        assert!(documents("a: 1\nb: {x: 1, x: 2}\n").unwrap().repeated_keys);
    }
}

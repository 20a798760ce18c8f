use std::collections::BTreeMap;

use super::ci::expand_existing;
use super::repo::{Repo, blob_id};

#[test]
fn variables_expand_once_and_unknown_ones_stay_literal() {
    let vars: BTreeMap<String, String> =
        [("TAG", "sandbox-arm64"), ("INDIRECT", "$TAG")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(expand_existing("$TAG", &vars), "sandbox-arm64");
    assert_eq!(expand_existing("${TAG}-x", &vars), "sandbox-arm64-x");
    assert_eq!(expand_existing("$MISSING", &vars), "$MISSING");
    assert_eq!(expand_existing("$INDIRECT", &vars), "$TAG", "values are not expanded again");
    assert_eq!(expand_existing("cost $5 and $", &vars), "cost $5 and $");
}

#[test]
fn blob_ids_are_gits() {
    // `printf 'hello\n' | git hash-object --stdin`
    assert_eq!(blob_id(b"hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
}

#[test]
fn last_commit_id_is_the_last_commit_that_touched_the_file() {
    let files = |a: &str, b: &str| -> BTreeMap<String, Vec<u8>> {
        [("a".to_string(), a.as_bytes().to_vec()), ("b".to_string(), b.as_bytes().to_vec())].into()
    };
    let mut r = Repo::init("main", files("1", "1"), "t0");
    let c1 = r.head("main").unwrap().id.clone();
    let c2 = r.commit("main", None, files("2", "1"), "a changes", ("x", "x@y"), "t1").unwrap().id;
    let c3 = r.commit("main", None, files("2", "2"), "b changes", ("x", "x@y"), "t2").unwrap().id;
    assert_eq!(r.last_commit_for(&c3, "a").as_deref(), Some(c2.as_str()));
    assert_eq!(r.last_commit_for(&c3, "b").as_deref(), Some(c3.as_str()));
    assert_eq!(r.last_commit_for(&c2, "b").as_deref(), Some(c1.as_str()));
}

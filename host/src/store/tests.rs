use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use super::maintenance::mentioned_ids;
use super::*;

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    (dir, store)
}

/// Deterministic pseudo-random bytes (xorshift), `len` long.
fn bytes_from_seed(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn make_writable(path: &Path) {
    let mut perms = fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(path, perms).unwrap();
}

fn flip_byte(path: &Path, index: usize) {
    make_writable(path);
    let mut bytes = fs::read(path).unwrap();
    bytes[index] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

fn tmp_entries(store: &Store) -> usize {
    fs::read_dir(store.root().join("tmp")).unwrap().count()
}

fn no_grace() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
    }
}

fn never() -> AtomicBool {
    AtomicBool::new(false)
}

#[test]
fn open_creates_the_layout_and_reopens() {
    let (dir, store) = new_store();
    for sub in ["objects", "refs", "tmp", "cache"] {
        assert!(store.root().join(sub).is_dir(), "{sub} missing");
    }
    let id = store.put(b"kept").unwrap();
    let again = Store::open(dir.path().join(".kiln")).unwrap();
    assert_eq!(again.get(&id).unwrap(), b"kept");
}

#[test]
fn open_names_the_path_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let err = Store::open(&file).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn round_trip() {
    let (_dir, store) = new_store();
    for (seed, len) in [(1, 0), (2, 1), (3, 1000), (4, 300_000)] {
        let bytes = bytes_from_seed(seed, len);
        let id = store.put(&bytes).unwrap();
        assert!(store.has(&id));
        assert_eq!(store.size(&id).unwrap(), len as u64);
        assert_eq!(store.get(&id).unwrap(), bytes);
    }
}

#[test]
fn id_is_blake3_of_the_bytes_and_file_is_fanned_out_read_only() {
    let (_dir, store) = new_store();
    let id = store.put(b"hello kiln").unwrap();
    assert_eq!(*id.as_hash(), blake3::hash(b"hello kiln"));
    assert_eq!(id, ObjectId::of(b"hello kiln"));
    let hex = id.to_string();
    let path = store.root().join("objects").join(&hex[..2]).join(&hex[2..]);
    assert_eq!(store.object_path(&id), path);
    assert!(fs::metadata(&path).unwrap().permissions().readonly());
}

#[test]
fn put_is_idempotent() {
    let (_dir, store) = new_store();
    let first = store.put(b"same").unwrap();
    let second = store.put(b"same").unwrap();
    let third = store.put_reader(&b"same"[..]).unwrap();
    assert_eq!(first, second);
    assert_eq!(first, third);
    assert_eq!(
        store.list().collect::<Result<Vec<_>, _>>().unwrap(),
        vec![first]
    );
    assert_eq!(tmp_entries(&store), 0, "temp files left behind");
}

#[test]
fn put_reader_streams_large_input_to_the_same_id() {
    let (_dir, store) = new_store();
    let bytes = bytes_from_seed(7, 5 * CHUNK + 123);
    let streamed = store.put_reader(std::io::Cursor::new(&bytes)).unwrap();
    assert_eq!(streamed, ObjectId::of(&bytes));
    assert_eq!(store.get(&streamed).unwrap(), bytes);
}

#[test]
fn put_reader_reports_a_failing_reader() {
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let (_dir, store) = new_store();
    let err = store.put_reader(Broken).unwrap_err();
    assert!(matches!(err, PutError::Read { .. }), "{err:?}");
    assert_eq!(tmp_entries(&store), 0);
}

#[test]
fn corruption_is_detected_on_read_with_both_hashes() {
    let (_dir, store) = new_store();
    let bytes = bytes_from_seed(11, 4096);
    let id = store.put(&bytes).unwrap();
    flip_byte(&store.object_path(&id), 100);
    let mut damaged = bytes.clone();
    damaged[100] ^= 0x01;
    let err = store.get(&id).unwrap_err();
    match &err {
        GetError::Corrupt {
            id: named,
            actual,
            path,
        } => {
            assert_eq!(*named, id);
            assert_eq!(*actual, ObjectId::of(&damaged));
            assert_eq!(*path, store.object_path(&id));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&id.to_string()), "{message}");
    assert!(
        message.contains(&ObjectId::of(&damaged).to_string()),
        "{message}"
    );
    assert!(err.hint().is_some());
}

#[test]
fn truncation_is_detected_and_put_repairs_it() {
    let (_dir, store) = new_store();
    let bytes = bytes_from_seed(12, 10_000);
    let id = store.put(&bytes).unwrap();
    let path = store.object_path(&id);
    make_writable(&path);
    fs::write(&path, &bytes[..5000]).unwrap();
    let err = store.get(&id).unwrap_err();
    assert!(
        matches!(&err, GetError::Corrupt { actual, .. } if *actual == ObjectId::of(&bytes[..5000])),
        "{err:?}"
    );
    // Adding the original bytes again replaces the short file.
    assert_eq!(store.put(&bytes).unwrap(), id);
    assert_eq!(store.get(&id).unwrap(), bytes);
    make_writable(&path);
    fs::write(&path, &bytes[..10]).unwrap();
    assert_eq!(store.put_reader(&bytes[..]).unwrap(), id);
    assert_eq!(store.get(&id).unwrap(), bytes);
}

#[test]
fn missing_object_is_named() {
    let (_dir, store) = new_store();
    let id = ObjectId::of(b"never stored");
    assert!(!store.has(&id));
    let err = store.get(&id).unwrap_err();
    assert!(matches!(err, GetError::NotFound { .. }));
    assert!(err.to_string().contains(&id.to_string()));
    assert!(matches!(store.size(&id), Err(GetError::NotFound { .. })));
}

/// Two distinct contents whose ids share their first four hex digits.
fn colliding_pair() -> (Vec<u8>, Vec<u8>) {
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    for i in 0u32.. {
        let bytes = format!("object {i}").into_bytes();
        let prefix = ObjectId::of(&bytes).to_string()[..4].to_string();
        if let Some(other) = seen.insert(prefix, bytes.clone()) {
            return (other, bytes);
        }
    }
    unreachable!()
}

#[test]
fn resolve_prefixes() {
    let (_dir, store) = new_store();
    let (a, b) = colliding_pair();
    let a = store.put(&a).unwrap();
    let b = store.put(&b).unwrap();
    let c = store.put(b"a third object").unwrap();

    // Unique: the full id, a long prefix, upper case.
    assert_eq!(store.resolve(&a.to_string()).unwrap(), a);
    assert_eq!(store.resolve(&c.short()).unwrap(), c);
    assert_eq!(
        store
            .resolve(&c.to_string()[..4].to_ascii_uppercase())
            .unwrap(),
        c
    );
    let distinct = (5..=64)
        .find(|&n| a.to_string()[..n] != b.to_string()[..n])
        .unwrap();
    assert_eq!(store.resolve(&a.to_string()[..distinct]).unwrap(), a);

    // Ambiguous: lists both, sorted.
    let prefix = &a.to_string()[..4];
    match store.resolve(prefix).unwrap_err() {
        err @ ResolveError::Ambiguous { .. } => {
            let message = err.to_string();
            assert!(
                message.contains(&a.to_string()) && message.contains(&b.to_string()),
                "{message}"
            );
            let ResolveError::Ambiguous { candidates, .. } = err else {
                unreachable!()
            };
            let mut expected = vec![a, b];
            expected.sort();
            assert_eq!(candidates, expected);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }

    // Unknown: a prefix no id has.
    let unknown = (0..=0xffffu32)
        .map(|n| format!("{n:04x}"))
        .find(|p| {
            ![a, b, c]
                .iter()
                .any(|id| id.to_string().starts_with(p.as_str()))
        })
        .unwrap();
    let err = store.resolve(&unknown).unwrap_err();
    assert!(matches!(err, ResolveError::Unknown { .. }), "{err:?}");
    assert!(err.to_string().contains(&unknown));
    let absent_full = ObjectId::of(b"absent").to_string();
    assert!(matches!(
        store.resolve(&absent_full),
        Err(ResolveError::Unknown { .. })
    ));

    // Too short, not hex, too long.
    assert!(matches!(
        store.resolve("abc"),
        Err(ResolveError::TooShort { min: 4, .. })
    ));
    assert!(matches!(
        store.resolve(""),
        Err(ResolveError::TooShort { .. })
    ));
    let err = store.resolve("abcz").unwrap_err();
    assert!(
        matches!(err, ResolveError::Invalid { .. }) && err.to_string().contains("`z`"),
        "{err}"
    );
    assert!(matches!(
        store.resolve(&"a".repeat(65)),
        Err(ResolveError::Invalid { .. })
    ));
    assert!(matches!(
        store.resolve("../x"),
        Err(ResolveError::Invalid { .. })
    ));
}

#[test]
fn ids_parse_display_and_serialize() {
    let id = ObjectId::of(b"x");
    let hex = id.to_string();
    assert_eq!(hex.len(), 64);
    assert_eq!(hex.parse::<ObjectId>().unwrap(), id);
    assert_eq!(hex.to_ascii_uppercase().parse::<ObjectId>().unwrap(), id);
    assert_eq!(id.short(), hex[..12]);
    assert_eq!(format!("{id:?}"), format!("ObjectId({hex})"));

    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{hex}\""));
    assert_eq!(serde_json::from_str::<ObjectId>(&json).unwrap(), id);
    let err = serde_json::from_str::<ObjectId>("\"abc\"").unwrap_err();
    assert!(
        err.to_string().contains("expected 64 hex digits, found 3"),
        "{err}"
    );

    let err = "abc".parse::<ObjectId>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "`abc` is not an object id: expected 64 hex digits, found 3"
    );
    let err = format!("{}g", &hex[..63]).parse::<ObjectId>().unwrap_err();
    assert!(
        err.to_string()
            .contains("`g` at byte 63 is not a hex digit"),
        "{err}"
    );
    let long = "é".repeat(200);
    assert!(long.parse::<ObjectId>().unwrap_err().input.ends_with("..."));
}

#[test]
fn list_is_sorted_and_skips_stray_files() {
    let (_dir, store) = new_store();
    let mut ids: Vec<_> = (0..40)
        .map(|i| store.put(format!("item {i}").as_bytes()).unwrap())
        .collect();
    ids.sort();
    fs::write(store.root().join("objects").join("README"), b"stray").unwrap();
    fs::create_dir_all(store.root().join("objects").join("zz")).unwrap();
    let fan = store.object_path(&ids[0]).parent().unwrap().to_path_buf();
    fs::write(fan.join("not-an-id"), b"stray").unwrap();
    let listed = store.list().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(listed, ids);
}

#[test]
fn refs_set_get_list_delete() {
    let (_dir, store) = new_store();
    let a = store.put(b"a").unwrap();
    let b = store.put(b"b").unwrap();
    assert_eq!(store.get_ref("harness/best").unwrap(), None);
    store.set_ref("harness/best", &a).unwrap();
    store.set_ref("harness/candidates/c-1", &b).unwrap();
    store.set_ref("runs/2024-01-01_x", &b).unwrap();
    assert_eq!(store.get_ref("harness/best").unwrap(), Some(a));
    store.set_ref("harness/best", &b).unwrap();
    assert_eq!(store.get_ref("harness/best").unwrap(), Some(b));

    assert_eq!(
        store.refs("harness/").unwrap(),
        vec![
            ("harness/best".to_string(), b),
            ("harness/candidates/c-1".to_string(), b)
        ]
    );
    assert_eq!(
        store.refs("harness/cand").unwrap(),
        vec![("harness/candidates/c-1".to_string(), b)]
    );
    assert_eq!(store.refs("").unwrap().len(), 3);
    assert!(store.refs("nothing").unwrap().is_empty());
    // A folder of refs is not itself a ref.
    assert_eq!(store.get_ref("harness").unwrap(), None);

    assert!(store.delete_ref("harness/candidates/c-1").unwrap());
    assert!(!store.delete_ref("harness/candidates/c-1").unwrap());
    assert!(
        !store.root().join("refs/harness/candidates").exists(),
        "empty ref folder left behind"
    );
    assert!(store.root().join("refs/harness/best").is_file());
    assert_eq!(store.refs("").unwrap().len(), 2);
    assert_eq!(tmp_entries(&store), 0);
}

#[test]
fn bad_ref_names_are_refused() {
    let (_dir, store) = new_store();
    let id = store.put(b"x").unwrap();
    for name in [
        "",
        "/a",
        "a/",
        "a//b",
        "..",
        "a/../b",
        "./a",
        "a b",
        "a\\b",
        "ü",
        "a:b",
        &"x".repeat(201),
    ] {
        let err = store.set_ref(name, &id).unwrap_err();
        assert!(
            matches!(err, RefError::InvalidName { .. }),
            "{name:?}: {err:?}"
        );
        assert!(err.hint().is_some());
        assert!(
            matches!(store.get_ref(name), Err(RefError::InvalidName { .. })),
            "{name:?}"
        );
        assert!(
            matches!(store.delete_ref(name), Err(RefError::InvalidName { .. })),
            "{name:?}"
        );
    }
    for name in ["a", "a.b/c_d-e", "v1.2/x", "..a/b..", "A/Z/0"] {
        store
            .set_ref(name, &id)
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }
    assert!(!store.root().join("b").exists());
}

#[test]
fn refs_must_point_at_stored_objects_and_not_conflict() {
    let (_dir, store) = new_store();
    let absent = ObjectId::of(b"absent");
    let err = store.set_ref("x", &absent).unwrap_err();
    assert!(matches!(err, RefError::MissingObject { .. }), "{err:?}");
    assert!(err.to_string().contains(&absent.to_string()));

    let id = store.put(b"x").unwrap();
    store.set_ref("a/b", &id).unwrap();
    assert!(matches!(
        store.set_ref("a", &id),
        Err(RefError::Conflict { .. })
    ));
    assert!(matches!(
        store.set_ref("a/b/c", &id),
        Err(RefError::Conflict { .. })
    ));
    assert_eq!(store.get_ref("a/b").unwrap(), Some(id));
}

#[test]
fn corrupt_ref_is_reported_with_its_content() {
    let (_dir, store) = new_store();
    fs::write(store.root().join("refs/broken"), b"not a hash\n").unwrap();
    let err = store.get_ref("broken").unwrap_err();
    assert!(matches!(err, RefError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("not a hash"), "{err}");
    assert!(matches!(store.refs(""), Err(RefError::Corrupt { .. })));
}

#[test]
fn mentioned_ids_follow_json_only() {
    let a = ObjectId::of(b"a");
    let b = ObjectId::of(b"b");
    let c = ObjectId::of(b"c");
    let json = format!(
        r#"{{"components": ["{a}"], "{b}": {{"trace": "blake3:{c}"}}, "long": "{a}0", "short": "{}"}}"#,
        &a.to_string()[..63]
    );
    assert_eq!(mentioned_ids(json.as_bytes()), vec![a, b, c]);
    // Not JSON: a leaf, even if it contains ids.
    assert!(mentioned_ids(format!("\0asm {a}").as_bytes()).is_empty());
    assert!(mentioned_ids(format!("{{\"broken\": \"{a}\"").as_bytes()).is_empty());
    // A bare JSON string works too.
    assert_eq!(mentioned_ids(format!("\"{a}\"").as_bytes()), vec![a]);
}

#[test]
fn gc_keeps_reachable_chains_and_removes_the_rest() {
    let (_dir, store) = new_store();
    let component = bytes_from_seed(21, 2000); // binary leaf
    let component_id = store.put(&component).unwrap();
    let trace = store.put(b"{\"events\": []}").unwrap();
    let index = store
        .put(format!("{{\"traces\": [\"{trace}\"]}}").as_bytes())
        .unwrap();
    let manifest = store
        .put(
            format!("{{\"components\": {{\"guard\": \"{component_id}\"}}, \"runs\": \"{index}\"}}")
                .as_bytes(),
        )
        .unwrap();
    store.set_ref("harness/best", &manifest).unwrap();

    let orphan = store.put(b"unreachable bytes").unwrap();
    // An unreachable JSON object naming a reachable one: removed, and the
    // reachable one stays.
    let orphan_json = store
        .put(format!("[\"{component_id}\"]").as_bytes())
        .unwrap();

    let report = store.gc_with(&no_grace()).unwrap();
    assert_eq!(report.reachable.count, 4);
    assert_eq!(report.removed.count, 2);
    assert_eq!(
        report.removed.bytes,
        store_len(&[
            b"unreachable bytes".as_slice(),
            format!("[\"{component_id}\"]").as_bytes()
        ])
    );
    assert_eq!(report.recent, Tally::default());
    assert_eq!(report.kept(), report.reachable);
    for id in [component_id, trace, index, manifest] {
        assert!(store.get(&id).is_ok(), "reachable {id} was removed");
    }
    assert!(!store.has(&orphan) && !store.has(&orphan_json));

    // A second run removes nothing.
    let again = store.gc_with(&no_grace()).unwrap();
    assert_eq!(again.removed, Tally::default());
    assert_eq!(again.reachable, report.reachable);

    // Dropping the ref frees the whole chain.
    store.delete_ref("harness/best").unwrap();
    let last = store.gc_with(&no_grace()).unwrap();
    assert_eq!(last.removed.count, 4);
    assert_eq!(store.list().count(), 0);
}

fn store_len(parts: &[&[u8]]) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

#[test]
fn gc_default_grace_keeps_new_unreachable_objects() {
    let (_dir, store) = new_store();
    let id = store.put(b"just written, ref not set yet").unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.recent.count, 1);
    assert_eq!(report.removed.count, 0);
    assert!(store.has(&id));
}

#[test]
fn gc_clears_only_stale_temp_files() {
    let (_dir, store) = new_store();
    let tmp = store.root().join("tmp");
    let stale = tmp.join("stale");
    let fresh = tmp.join("fresh");
    fs::write(&stale, b"left by a crash").unwrap();
    fs::write(&fresh, b"being written").unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 60 * 60);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let report = store.gc().unwrap();
    assert_eq!(
        report.tmp_removed,
        Tally {
            count: 1,
            bytes: 15
        }
    );
    assert!(!stale.exists());
    assert!(fresh.exists());
}

#[test]
fn gc_stops_before_deleting_when_a_reachable_object_is_corrupt() {
    let (_dir, store) = new_store();
    let leaf = store.put(b"leaf").unwrap();
    let manifest = store
        .put(format!("{{\"leaf\": \"{leaf}\"}}").as_bytes())
        .unwrap();
    let orphan = store.put(b"orphan").unwrap();
    store.set_ref("m", &manifest).unwrap();
    flip_byte(&store.object_path(&manifest), 2);
    let err = store.gc_with(&no_grace()).unwrap_err();
    assert!(
        matches!(&err, GcError::Corrupt { id, .. } if *id == manifest),
        "{err:?}"
    );
    assert!(err.to_string().contains(&manifest.to_string()));
    assert!(err.hint().is_some());
    assert!(
        store.has(&leaf) && store.has(&orphan),
        "gc deleted after finding damage"
    );
}

#[test]
fn gc_reports_dangling_refs() {
    let (_dir, store) = new_store();
    let absent = ObjectId::of(b"gone");
    fs::write(store.root().join("refs/lost"), format!("{absent}\n")).unwrap();
    let report = store.gc_with(&no_grace()).unwrap();
    assert_eq!(report.dangling_refs, vec![("lost".to_string(), absent)]);
}

#[test]
fn verify_reports_corrupt_objects_and_progress() {
    let (_dir, store) = new_store();
    let ids: Vec<_> = (0..10)
        .map(|i| store.put(&bytes_from_seed(i, 100 + i as usize)).unwrap())
        .collect();
    let mut calls = Vec::new();
    let clean = store.verify(|p| calls.push(*p), &never()).unwrap();
    assert!(clean.is_clean());
    assert_eq!((clean.checked, clean.total), (10, 10));
    assert_eq!(clean.bytes, (0..10).map(|i| 100 + i).sum::<u64>());
    assert_eq!(calls.len(), 10);
    assert_eq!(calls.last().unwrap().checked, 10);

    let mut damaged: Vec<_> = vec![ids[3], ids[7]];
    damaged.sort();
    for id in &damaged {
        flip_byte(&store.object_path(id), 0);
    }
    let report = store.verify(|_| {}, &never()).unwrap();
    assert!(!report.is_clean());
    assert_eq!(
        report.corrupt.iter().map(|c| c.id).collect::<Vec<_>>(),
        damaged
    );
    for c in &report.corrupt {
        let text = c.to_string();
        assert!(
            text.contains(&c.id.to_string()) && text.contains(&c.actual.to_string()),
            "{text}"
        );
        assert_ne!(c.id, c.actual);
    }

    let stop = AtomicBool::new(true);
    let interrupted = store.verify(|_| {}, &stop).unwrap();
    assert!(interrupted.interrupted && !interrupted.is_clean());
    assert_eq!(interrupted.checked, 0);
}

#[test]
fn concurrent_writers_leave_a_consistent_store() {
    let (_dir, store) = new_store();
    const THREADS: u64 = 8;
    const DISTINCT: u64 = 24;
    let content = |n: u64| bytes_from_seed(n, 1000 + (n as usize * 997) % 70_000);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let store = store.clone();
            scope.spawn(move || {
                for round in 0..40 {
                    // Threads walk the same contents in different orders.
                    let n = (t * 5 + round * 7) % DISTINCT;
                    let bytes = content(n);
                    let id = if round % 2 == 0 {
                        store.put(&bytes).unwrap()
                    } else {
                        store.put_reader(&bytes[..]).unwrap()
                    };
                    assert_eq!(id, ObjectId::of(&bytes));
                    store.set_ref("shared/latest", &id).unwrap();
                    store.set_ref(&format!("thread/{t}"), &id).unwrap();
                    assert_eq!(store.get(&id).unwrap(), bytes);
                }
            });
        }
    });
    let expected: BTreeSet<_> = (0..DISTINCT).map(|n| ObjectId::of(&content(n))).collect();
    let listed: BTreeSet<_> = store.list().map(Result::unwrap).collect();
    assert_eq!(listed, expected);
    assert!(store.verify(|_| {}, &never()).unwrap().is_clean());
    assert_eq!(tmp_entries(&store), 0, "temp files left behind");
    let refs = store.refs("").unwrap();
    assert_eq!(refs.len(), THREADS as usize + 1);
    assert!(refs.iter().all(|(_, id)| expected.contains(id)));
}

#[test]
fn concurrent_ref_updates_and_deletes_in_one_folder() {
    let (_dir, store) = new_store();
    let id = store.put(b"target").unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = store.clone();
            scope.spawn(move || {
                // Each delete may prune the shared folder another thread is
                // about to write into.
                for round in 0..200 {
                    let name = format!("ns/deep/r{t}-{round}");
                    store.set_ref(&name, &id).unwrap();
                    assert_eq!(store.get_ref(&name).unwrap(), Some(id));
                    assert!(store.delete_ref(&name).unwrap());
                }
                store.set_ref(&format!("ns/deep/final{t}"), &id).unwrap();
            });
        }
    });
    let names: Vec<_> = store
        .refs("ns/")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "ns/deep/final0",
            "ns/deep/final1",
            "ns/deep/final2",
            "ns/deep/final3"
        ]
    );
}

#[test]
fn cache_put_get_remove() {
    let (_dir, store) = new_store();
    assert_eq!(store.cache_get("compiled", "abc-x86_64").unwrap(), None);
    let path = store
        .cache_put("compiled", "abc-x86_64", b"machine code")
        .unwrap();
    assert_eq!(path, store.cache_path("compiled", "abc-x86_64").unwrap());
    assert_eq!(path, store.root().join("cache/compiled/abc-x86_64"));
    assert_eq!(
        store.cache_get("compiled", "abc-x86_64").unwrap().unwrap(),
        b"machine code"
    );
    store.cache_put("compiled", "abc-x86_64", b"newer").unwrap();
    assert_eq!(
        store.cache_get("compiled", "abc-x86_64").unwrap().unwrap(),
        b"newer"
    );
    assert!(store.cache_remove("compiled", "abc-x86_64").unwrap());
    assert!(!store.cache_remove("compiled", "abc-x86_64").unwrap());
    assert_eq!(tmp_entries(&store), 0);

    for (ns, key) in [
        ("", "k"),
        ("ns", ""),
        ("../x", "k"),
        ("ns", "a/b"),
        ("ns", ".hidden"),
        ("ns", ".."),
    ] {
        let err = store.cache_put(ns, key, b"x").unwrap_err();
        assert!(
            matches!(err, CacheError::InvalidName { .. }),
            "{ns:?}/{key:?}: {err:?}"
        );
    }
    // Cache entries are not objects: gc leaves them alone.
    store.cache_put("compiled", "k", b"x").unwrap();
    store.gc_with(&no_grace()).unwrap();
    assert!(store.cache_get("compiled", "k").unwrap().is_some());
}

#[test]
fn store_error_wraps_every_operation() {
    let (_dir, store) = new_store();
    let err: StoreError = store.resolve("ab").unwrap_err().into();
    assert!(err.hint().is_some());
    assert!(err.to_string().contains("too short"));
}

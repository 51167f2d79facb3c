//! Tests of the harness room: manifest errors with positions, canonical ids,
//! composition through manifests, edits and lineage through a real store,
//! and (in `real`) the stock processor components.
//!
//! Most tests use [`FakeProbe`], whose "components" are plain byte strings
//! in the store with facts registered beside them, so every rule is
//! exercised without a Wasm engine; `real` runs the same paths on built
//! components.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;
use crate::sandbox::{Band, Hook, Info};

/// Facts registered per fake component. A config with `"reject": true` is
/// refused; `"provides": [..]` lists the tools it provides.
#[derive(Default)]
struct FakeProbe {
    infos: Mutex<HashMap<ObjectId, Info>>,
}

impl Probe for FakeProbe {
    fn probe(&self, entry: &ProcessorEntry) -> Result<Facts, ProbeError> {
        let info = self.infos.lock().unwrap().get(&entry.component).cloned().ok_or_else(|| ProbeError::NotAProcessor {
            component: entry.component,
            reason: format!("component {} does not export kiln:harness/hooks@0.1.0", entry.component),
        })?;
        if entry.config.get("reject") == Some(&json!(true)) {
            return Err(ProbeError::Rejected { processor: info.name.clone(), reason: format!("config for `{}` is invalid: `reject` is set", info.name) });
        }
        let tools = entry.config.get("provides").and_then(|v| v.as_array()).map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect()).unwrap_or_default();
        Ok(Facts { info, tools })
    }
}

struct Bench {
    _dir: tempfile::TempDir,
    store: Store,
    workshop: Workshop,
    ids: HashMap<&'static str, ObjectId>,
}

/// A store holding these fake components: (name, band, group, after).
const FAKES: &[(&str, Band, Option<&str>, &[&str])] = &[
    ("guard", Band::Normal, Some("loop-guard"), &[]),
    ("guard-2", Band::Normal, Some("loop-guard"), &[]),
    ("repair", Band::Normal, Some("repair"), &["guard"]),
    ("pin", Band::Pre, Some("goal"), &[]),
    ("trim", Band::Post, None, &[]),
    ("ping", Band::Normal, None, &["pong"]),
    ("pong", Band::Normal, None, &["ping"]),
];

fn bench() -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    let probe = Arc::new(FakeProbe::default());
    let mut ids = HashMap::new();
    for (name, band, group, after) in FAKES {
        let id = store.put(format!("fake component {name}").as_bytes()).unwrap();
        let info = Info {
            name: name.to_string(),
            version: "0.1.0".into(),
            hooks: vec![Hook::StepStart],
            group: group.map(str::to_string),
            band: *band,
            after: after.iter().map(|s| s.to_string()).collect(),
        };
        probe.infos.lock().unwrap().insert(id, info);
        ids.insert(*name, id);
    }
    let workshop = Workshop { store: store.clone(), probe: probe.clone(), build_dir: dir.path().join("build") };
    Bench { _dir: dir, store, workshop, ids }
}

impl Bench {
    /// `{name}` in `text` becomes the 12-digit prefix of that fake's id, `{name:full}` the full id.
    fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, id) in &self.ids {
            out = out.replace(&format!("{{{name}:full}}"), &id.to_hex()).replace(&format!("{{{name}}}"), &id.short());
        }
        out
    }

    fn resolve(&self, text: &str) -> Result<Authored, ManifestError> {
        let m = Manifest::parse(Path::new("demo.toml"), &self.text(text))?;
        self.workshop.resolve(&m)
    }

    fn harness(&self, text: &str) -> Harness {
        self.resolve(text).unwrap_or_else(|e| panic!("{e}")).harness
    }

    fn entry(&self, name: &str) -> ProcessorEntry {
        ProcessorEntry::new(self.ids[name])
    }
}

fn parse_err(text: &str) -> ManifestError {
    Manifest::parse(Path::new("demo.toml"), text).unwrap_err()
}

fn names(h: &Harness) -> Vec<&str> {
    h.processors().iter().map(Processor::name).collect()
}

// ---------------------------------------------------------------- parsing

#[test]
fn unknown_top_level_key_is_named_with_the_closest_valid_one() {
    let e = parse_err("name = \"demo\"\nsytem = \"hi\"\n");
    assert_eq!(
        e.to_string(),
        "harness `demo.toml` is invalid\n  \
         ╭─[demo.toml:2:1]\n\
         2 │ sytem = \"hi\"\n  \
         · ──┬──\n  \
         ·   ╰── unknown key `sytem` in a harness manifest\n\
         help: did you mean `system`? the keys allowed in a harness manifest are `name`, `system`, `tools`, `processors`"
    );
    assert_eq!((e.line, e.col), (2, 1));
}

#[test]
fn unknown_key_in_a_processor_entry_suggests_the_key() {
    let e = parse_err("[[processors]]\nsource = \"../processors/loop-guard\"\nconfg = { window = 8 }\n");
    assert_eq!((e.line, e.col), (3, 1));
    assert_eq!(e.message, "unknown key `confg` in a [[processors]] entry");
    assert!(e.help.as_deref().unwrap().starts_with("did you mean `config`?"), "{e}");
}

#[test]
fn underscore_for_dash_in_on_fault_is_suggested() {
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\non_fault = \"skip\"\n");
    assert!(e.help.as_deref().unwrap().starts_with("did you mean `on-fault`?"), "{e}");
}

#[test]
fn unknown_key_far_from_any_lists_the_valid_keys_only() {
    let e = parse_err("[tools]\nzzz = 1\n");
    assert_eq!(e.help.as_deref(), Some("the keys allowed in [tools] are `deny`, `text_actions`"));
}

#[test]
fn wrong_types_say_what_was_expected_with_an_example() {
    let e = parse_err("system = 3\n");
    assert_eq!(
        e.to_string(),
        "harness `demo.toml` is invalid\n  \
         ╭─[demo.toml:1:10]\n\
         1 │ system = 3\n  \
         ·          ┬\n  \
         ·          ╰── `system` must be a string, found an integer\n\
         help: for example: system = \"You are a careful agent. {tools}\""
    );
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\nlimits = { fuel = \"lots\" }\n");
    assert_eq!((e.line, e.col, e.message.as_str()), (3, 19, "`fuel` must be a whole number, found a string"));
    let e = parse_err("[tools]\ntext_actions = \"no\"\n");
    assert_eq!(e.message, "`text_actions` must be true or false, found a string");
    let e = parse_err("[tools]\ndeny = [\"a\", 2]\n");
    assert_eq!((e.line, e.col, e.message.as_str()), (2, 14, "`each item of `deny`` must be a string, found an integer"));
    let e = parse_err("processors = 1\n");
    assert_eq!(e.message, "`processors` must be an array of tables ([[processors]]), found an integer");
}

#[test]
fn bad_limits_are_refused_at_the_value_with_the_range() {
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\nlimits = { deadline_ms = 50, fuel = 5 }\n");
    assert_eq!(
        e.to_string(),
        "harness `demo.toml` is invalid\n  \
         ╭─[demo.toml:3:37]\n\
         3 │ limits = { deadline_ms = 50, fuel = 5 }\n  \
         ·                                     ┬\n  \
         ·                                     ╰── `fuel` = 5 is out of range: between 1,000 and 10^11\n\
         help: set `fuel` within range, or leave it out for the default (10000000)"
    );
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\nlimits = { fule = 5 }\n");
    assert!(e.help.as_deref().unwrap().starts_with("did you mean `fuel`?"), "{e}");
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\nlimits = { fuel = -5 }\n");
    assert_eq!(e.message, "`fuel` must not be negative");
}

#[test]
fn bad_failure_policies_are_explained() {
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\non-fault = \"disabel\"\n");
    assert_eq!((e.line, e.col), (3, 12));
    assert_eq!(e.message, "`on-fault` must be \"skip\", \"abort\" or \"disable\", found \"disabel\"");
    assert!(e.help.as_deref().unwrap().starts_with("did you mean \"disable\"?"), "{e}");
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\non-fault = \"disable\"\n");
    assert_eq!(e.message, "`on-fault = \"disable\"` needs `after`: how many faults before the processor is taken out");
    assert_eq!(e.help.as_deref(), Some("add `after = 3` to this [[processors]] entry"));
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\nafter = 2\n");
    assert_eq!((e.line, e.col), (3, 9));
    assert!(e.message.starts_with("`after` applies only with `on-fault = \"disable\"`"), "{e}");
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\non-fault = \"disable\"\nafter = 0\n");
    assert!(e.message.starts_with("`after` must be at least 1"), "{e}");
}

#[test]
fn an_entry_without_a_component_points_at_its_header() {
    let e = parse_err("name = \"x\"\n\n[[processors]]\nconfig = { a = 1 }\n");
    assert_eq!((e.line, e.col), (3, 1), "{e}");
    assert_eq!(e.message, "this processor entry names no component");
    let e = parse_err("[[processors]]\nsource = \"a\"\ncomponent = \"abcd\"\n");
    assert_eq!((e.line, e.col, e.message.as_str()), (3, 1, "a processor entry names its component twice"));
}

#[test]
fn toml_syntax_errors_point_at_the_syntax() {
    let e = parse_err("name = \"x\"\nsystem = \"unterminated\n");
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.starts_with("invalid TOML"), "{e}");
}

#[test]
fn config_that_json_cannot_hold_is_refused() {
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\nconfig = { when = 1979-05-27 }\n");
    assert!(e.message.contains("TOML datetime"), "{e}");
    let e = parse_err("[[processors]]\ncomponent = \"abcd\"\nconfig = { x = nan }\n");
    assert!(e.message.contains("not a finite number"), "{e}");
}

#[test]
fn dangling_component_references_are_refused_at_the_value() {
    let b = bench();
    let e = b.resolve("[[processors]]\ncomponent = \"0000dead\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "harness `demo.toml` is invalid\n  \
         ╭─[demo.toml:2:13]\n\
         2 │ component = \"0000dead\"\n  \
         ·             ─────┬────\n  \
         ·                  ╰── no such component: no object id starts with `0000dead`\n\
         help: store it first with `kiln build <crate dir>`, or name its crate with `source = \"<dir>\"`"
    );
    let e = b.resolve("[[processors]]\ncomponent = \"ab\"\n").unwrap_err();
    assert!(e.message.contains("too short"), "{e}");
    let e = b.resolve("[[processors]]\nsource = \"../no-such-crate\"\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 10));
    assert!(e.message.starts_with("no Cargo.toml at `../no-such-crate`"), "{e}");
    assert_eq!(e.help.as_deref(), Some("`source` is a processor crate directory, relative to this manifest's folder"));
}

#[test]
fn a_stored_object_that_is_not_a_processor_is_refused() {
    let b = bench();
    let junk = b.store.put(b"not a component").unwrap();
    let e = b.resolve(&format!("[[processors]]\ncomponent = \"{}\"\n", junk.short())).unwrap_err();
    assert_eq!(e.message, format!("`{}` is not a kiln processor", junk.short()));
}

#[test]
fn composition_errors_point_at_the_entry_that_broke_the_rule() {
    let b = bench();
    let e = b.resolve("[[processors]]\ncomponent = \"{guard}\"\n\n[[processors]]\ncomponent = \"{guard-2}\"\n").unwrap_err();
    assert_eq!((e.line, e.col), (5, 13));
    assert_eq!(e.message, "a second processor in singleton group `loop-guard` (`guard-2` joins `guard`)");
    assert_eq!(e.help.as_deref(), Some("remove one, or use replace"));
    let e = b.resolve("[[processors]]\ncomponent = \"{ping}\"\n[[processors]]\ncomponent = \"{pong}\"\n").unwrap_err();
    assert_eq!(e.message, "the `after` dependencies form a cycle: ping → pong → ping");
    let e = b
        .resolve("[[processors]]\ncomponent = \"{guard}\"\nconfig = { provides = [\"t\"] }\n[[processors]]\ncomponent = \"{trim}\"\nconfig = { provides = [\"t\"] }\n")
        .unwrap_err();
    assert_eq!((e.line, e.message.as_str()), (5, "tool `t` is provided by both `guard` and `trim`"));
}

#[test]
fn a_refused_config_points_at_the_config() {
    let b = bench();
    let e = b.resolve("[[processors]]\ncomponent = \"{guard}\"\nconfig = { reject = true }\n").unwrap_err();
    assert_eq!((e.line, e.col), (3, 10));
    assert_eq!(e.message, "`guard` refused this config");
    assert_eq!(e.help.as_deref(), Some("config for `guard` is invalid: `reject` is set"));
}

#[test]
fn the_name_must_make_a_ref() {
    let b = bench();
    let e = b.resolve("name = \"my harness\"\n").unwrap_err();
    assert_eq!((e.line, e.col), (1, 8));
    assert!(e.message.starts_with("`my harness` cannot name a harness"), "{e}");
    assert_eq!(b.resolve("").unwrap().name, "demo");
}

// ---------------------------------------------------------------- canonical form and ids

#[test]
fn canonical_form_writes_defaults_sorts_keys_and_excludes_the_name() {
    let b = bench();
    let h = b.harness("name = \"stock\"\nsystem = \"Be careful.\"\n[tools]\ndeny = [\"z\", \"a\", \"z\"]\n[[processors]]\ncomponent = \"{trim}\"\n");
    let text = String::from_utf8(h.canonical_json().to_vec()).unwrap();
    let trim = b.ids["trim"];
    assert_eq!(
        text,
        format!(
            "{{\"format\":\"kiln.harness/1\",\"processors\":[{{\"component\":\"{trim}\",\"config\":{{}},\"grants\":{{\"net\":[],\"read\":[]}},\
             \"limits\":{{\"deadline_ms\":200,\"fuel\":10000000,\"host_calls\":100000,\"init_deadline_ms\":5000,\"init_fuel\":200000000,\
             \"memory_bytes\":33554432,\"output_bytes\":1048576}},\"on-fault\":\"skip\"}}],\"system\":\"Be careful.\",\
             \"tools\":{{\"deny\":[\"a\",\"z\"],\"text_actions\":false}}}}"
        )
    );
    assert_eq!(h.id(), ObjectId::of(text.as_bytes()));
}

#[test]
fn same_meaning_same_id_whatever_the_order_formatting_or_defaults() {
    let b = bench();
    let plain = b.harness(
        "name = \"a\"\nsystem = \"Be careful. {tools}\"\n[tools]\ndeny = [\"b\", \"a\"]\n\n\
         [[processors]]\ncomponent = \"{trim}\"\n\n\
         [[processors]]\ncomponent = \"{guard}\"\nconfig = { window = 8, block_after = 3 }\nlimits = { fuel = 5000000 }\n",
    );
    let shuffled = b.harness(
        "tools = { text_actions = false, deny = [\"a\", \"b\", \"a\"] }\nsystem = 'Be careful. {tools}'\nname = \"another-name\"\n\n\
         [[processors]]\nlimits.deadline_ms = 200\nlimits.fuel = 5_000_000\non-fault = \"skip\"\ngrants = { read = [], net = [] }\n\
         component = \"{guard:full}\"\n\n[processors.config]\nblock_after = 0x3\nwindow = 8\n\n\
         [[processors]]\nconfig = {}\ncomponent = \"{trim}\"\n",
    );
    assert_eq!(plain.id(), shuffled.id());
    assert_eq!(names(&plain), ["guard", "trim"], "post band runs last whatever the manifest order");
    let different = b.harness("system = \"Be careful. {tools}\"\n[tools]\ndeny = [\"a\", \"b\"]\n[[processors]]\ncomponent = \"{guard}\"\nconfig = { window = 9, block_after = 3 }\nlimits = { fuel = 5000000 }\n[[processors]]\ncomponent = \"{trim}\"\n");
    assert_ne!(plain.id(), different.id());
}

#[test]
fn author_order_within_a_band_is_part_of_the_meaning() {
    let b = bench();
    let a = b.harness("[[processors]]\ncomponent = \"{guard}\"\n[[processors]]\ncomponent = \"{ping}\"\nconfig = { x = 1 }\n");
    // ping waits for pong, which is absent: soft dependency, ignored.
    assert_eq!(names(&a), ["guard", "ping"]);
    let swapped = b.harness("[[processors]]\ncomponent = \"{ping}\"\nconfig = { x = 1 }\n[[processors]]\ncomponent = \"{guard}\"\n");
    assert_eq!(names(&swapped), ["ping", "guard"]);
    assert_ne!(a.id(), swapped.id());
}

#[test]
fn stored_harness_loads_back_to_the_same_id_and_name_ref() {
    let b = bench();
    let authored = b.resolve("name = \"stock\"\n[[processors]]\ncomponent = \"{repair}\"\n[[processors]]\ncomponent = \"{guard}\"\n").unwrap();
    assert_eq!(names(&authored.harness), ["guard", "repair"], "repair runs after guard");
    let id = authored.harness.save(&b.store, Some(&authored.name)).unwrap();
    assert_eq!(find(&b.store, "stock").unwrap(), id);
    assert_eq!(find(&b.store, &id.short()).unwrap(), id);
    assert!(matches!(find(&b.store, "nope"), Err(HarnessError::Unknown { .. })));
    let loaded = b.workshop.load(&id).unwrap();
    assert_eq!(loaded.canonical_json(), authored.harness.canonical_json());
    assert_eq!(names(&loaded), ["guard", "repair"]);
}

#[test]
fn a_non_canonical_object_is_refused_on_load() {
    let b = bench();
    let h = b.harness("[[processors]]\ncomponent = \"{trim}\"\n");
    let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(h.canonical_json()).unwrap()).unwrap();
    let id = b.store.put(&pretty).unwrap();
    assert!(matches!(b.workshop.load(&id), Err(HarnessError::NotCanonical { actual, .. }) if actual == h.id()));
    let other = b.store.put(br#"{"format":"kiln.trace/1"}"#).unwrap();
    let err = b.workshop.load(&other).unwrap_err();
    assert!(err.to_string().contains("its format is `kiln.trace/1`"), "{err}");
}

mod invariance {
    //! Property: rendering the same harness as TOML in different ways (key
    //! order, inline vs dotted vs sub-tables, defaults written or left out,
    //! processors of different bands reordered, number formats) never
    //! changes its id.
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    struct Spec {
        system: String,
        deny: Vec<String>,
        text_actions: bool,
        processors: Vec<ProcSpec>,
    }

    /// (fake component, config, fuel, on-fault: 0 skip, 1 abort, 2 disable)
    type ProcSpec = (&'static str, Vec<(String, i64)>, Option<u64>, u8);

    fn spec() -> impl Strategy<Value = Spec> {
        let pool = proptest::sample::subsequence(vec!["pin", "guard", "repair", "trim"], 0..=4);
        let proc_ = |name: &'static str| (Just(name), proptest::collection::vec(("[a-z]{1,6}", -1000i64..1000), 0..3), proptest::option::of(1_000u64..1_000_000_000), 0u8..3);
        (
            "[a-zA-Z .{}]{0,24}",
            proptest::collection::vec("[a-z_]{1,8}", 0..4),
            any::<bool>(),
            pool.prop_flat_map(move |names| names.into_iter().map(proc_).collect::<Vec<_>>()),
        )
            .prop_map(|(system, deny, text_actions, processors)| Spec { system, deny, text_actions, processors })
    }

    /// Render `spec` as TOML; `style` picks one of several equivalent spellings.
    fn render(b: &Bench, spec: &Spec, style: u8) -> String {
        let verbose = style & 1 == 1;
        let reorder = style & 2 == 2;
        let mut top = vec![format!("system = {:?}", spec.system)];
        if verbose || !spec.deny.is_empty() || spec.text_actions {
            let mut deny = spec.deny.clone();
            if reorder {
                deny.reverse();
                deny.extend(spec.deny.first().cloned());
            }
            top.push(format!("tools = {{ deny = {:?}, text_actions = {} }}", deny, spec.text_actions));
        }
        if reorder {
            top.reverse();
        }
        let mut processors = spec.processors.clone();
        if reorder {
            // Reordering across bands only: a stable sort by band, latest first.
            processors.sort_by_key(|(name, ..)| std::cmp::Reverse(FAKES.iter().find(|f| f.0 == *name).unwrap().1));
        }
        let mut out = top.join("\n") + "\n";
        for (name, config, fuel, policy) in processors {
            let mut keys = vec![format!("component = \"{}\"", if verbose { b.ids[name].to_hex() } else { b.ids[name].short() })];
            let unique = { let mut seen = std::collections::HashSet::new(); config.iter().all(|(k, _)| seen.insert(k)) };
            if !unique {
                continue;
            }
            if verbose {
                // Dotted keys, and hex for what TOML allows in hex.
                for (k, v) in &config {
                    keys.push(if *v >= 0 { format!("config.{k} = {v:#x}") } else { format!("config.{k} = {v}") });
                }
            } else if !config.is_empty() {
                let cfg: Vec<String> = config.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                keys.push(format!("config = {{ {} }}", cfg.join(", ")));
            }
            match fuel {
                Some(f) => keys.push(format!("limits = {{ fuel = {f}{} }}", if verbose { ", deadline_ms = 200" } else { "" })),
                None if verbose => keys.push("limits = { fuel = 10_000_000 }".into()),
                None => {}
            }
            match policy {
                0 if verbose => keys.push("on-fault = \"skip\"".into()),
                0 => {}
                1 => keys.push("on-fault = \"abort\"".into()),
                _ => keys.push("on-fault = \"disable\"\nafter = 2".into()),
            }
            if verbose {
                keys.push("grants = { read = [], net = [] }".into());
            }
            if reorder {
                keys.reverse();
            }
            out += &format!("\n[[processors]]\n{}\n", keys.join("\n"));
        }
        out
    }

    proptest! {
        // A fixed seed: the same 64 cases on every run and every machine.
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b696c6e), ..ProptestConfig::default() })]
        #[test]
        fn every_spelling_of_a_harness_has_one_id(spec in spec(), style in 1u8..4) {
            let b = bench();
            let plain = render(&b, &spec, 0);
            let other = render(&b, &spec, style);
            let a = b.resolve(&plain).map_err(|e| TestCaseError::fail(format!("{e}\n{plain}")))?.harness;
            let c = b.resolve(&other).map_err(|e| TestCaseError::fail(format!("{e}\n{other}")))?.harness;
            prop_assert_eq!(a.id(), c.id(), "\n{}\n---\n{}", plain, other);
        }
    }
}

// ---------------------------------------------------------------- edits and lineage

#[test]
fn insert_into_an_occupied_singleton_group_names_the_rule() {
    let b = bench();
    let base = b.harness("[[processors]]\ncomponent = \"{guard}\"\n");
    let err = base.insert(b.entry("guard-2")).unwrap_err();
    assert_eq!(err.to_string(), "a second processor in singleton group `loop-guard` (`guard-2` joins `guard`): remove one, or use replace");
    assert!(base.lineage().is_none());
}

#[test]
fn edits_return_new_harnesses_and_leave_the_parent_alone() {
    let b = bench();
    let base = b.harness("system = \"v1\"\n[[processors]]\ncomponent = \"{guard}\"\n[[processors]]\ncomponent = \"{trim}\"\n");
    let pinned = base.insert(b.entry("pin")).unwrap();
    assert_eq!(names(&pinned), ["pin", "guard", "trim"], "pre band goes first");
    let replaced = pinned.replace("loop-guard", b.entry("guard-2")).unwrap();
    assert_eq!(names(&replaced), ["pin", "guard-2", "trim"]);
    let removed = replaced.remove("trim").unwrap();
    assert_eq!(names(&removed), ["pin", "guard-2"]);
    let configured = removed.set_config("guard-2", json!({"window": 8})).unwrap();
    assert_eq!(configured.processor("loop-guard").unwrap().entry.config_text(), r#"{"window":8}"#);
    let prompted = configured.set_system("v2").unwrap();
    assert_eq!(prompted.system(), "v2");
    assert_eq!(names(&base), ["guard", "trim"]);
    assert_eq!(base.system(), "v1");
    let chain = [&base, &pinned, &replaced, &removed, &configured, &prompted];
    let ids: std::collections::HashSet<ObjectId> = chain.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), chain.len(), "every edit changed the id");
}

#[test]
fn refused_edits_say_why() {
    let b = bench();
    let base = b.harness("[[processors]]\ncomponent = \"{guard}\"\n[[processors]]\ncomponent = \"{ping}\"\n");
    let err = base.remove("nope").unwrap_err();
    assert_eq!(err.to_string(), "no processor or group named `nope` in this harness (it has: guard, ping)");
    let err = base.set_config("guard", json!([1])).unwrap_err();
    assert_eq!(err.to_string(), "a processor's config must be a JSON object, not an array");
    let err = base.set_config("guard", json!({"reject": true})).unwrap_err();
    assert_eq!(err.to_string(), "processor 1: processor `guard` refused its configuration: config for `guard` is invalid: `reject` is set");
    let err = base.insert(b.entry("pong")).unwrap_err();
    assert_eq!(err.to_string(), "the `after` dependencies form a cycle: ping → pong → ping: remove one processor of the cycle");
    let err = base.insert(b.entry("trim").with_config(json!({"provides": ["x"]}).as_object().unwrap().clone())).and_then(|h| h.set_config("guard", json!({"provides": ["x"]}))).unwrap_err();
    assert_eq!(err.to_string(), "tool `x` is provided by both `guard` and `trim`: keep one of the two providers, or configure one to name its tool differently");
}

#[test]
fn an_edit_that_changes_nothing_records_nothing() {
    let b = bench();
    let base = b.harness("system = \"same\"\n[[processors]]\ncomponent = \"{guard}\"\n");
    let same = base.set_system("same").unwrap();
    assert_eq!(same.id(), base.id());
    assert!(same.lineage().is_none());
}

#[test]
fn merge_unites_and_refuses_to_choose() {
    let b = bench();
    let ours = b.harness("[tools]\ndeny = [\"a\"]\n[[processors]]\ncomponent = \"{guard}\"\n");
    let theirs = b.harness("system = \"theirs\"\n[tools]\ndeny = [\"b\"]\ntext_actions = true\n[[processors]]\ncomponent = \"{pin}\"\n[[processors]]\ncomponent = \"{guard}\"\n");
    let merged = ours.merge(&theirs).unwrap();
    assert_eq!(names(&merged), ["pin", "guard"]);
    assert_eq!(merged.tools(), &ToolPolicy { deny: vec!["a".into(), "b".into()], text_actions: true });
    assert_eq!(merged.system(), "theirs");
    let clash = b.harness("[[processors]]\ncomponent = \"{guard}\"\nconfig = { window = 3 }\n");
    assert_eq!(ours.merge(&clash).unwrap_err(), EditError::MergeConflict { name: "guard".into() });
    let group = b.harness("[[processors]]\ncomponent = \"{guard-2}\"\n");
    assert!(matches!(ours.merge(&group).unwrap_err(), EditError::Compose(ComposeError::GroupConflict { .. })));
    let other_system = b.harness("system = \"mine\"\n");
    assert_eq!(other_system.merge(&theirs).unwrap_err(), EditError::MergeSettingConflict { what: "the system prompt" });
}

#[test]
fn lineage_round_trips_through_the_store_and_survives_gc() {
    let b = bench();
    let base = b.harness("system = \"v1\"\n[[processors]]\ncomponent = \"{guard}\"\n");
    let other = b.harness("[[processors]]\ncomponent = \"{trim}\"\n");
    let child = base
        .insert(b.entry("pin"))
        .and_then(|h| h.set_config("guard", json!({"window": 8})))
        .and_then(|h| h.merge(&other))
        .and_then(|h| h.set_system("v2"))
        .and_then(|h| h.remove("goal"))
        .unwrap();
    // Only the child is saved explicitly: every ancestor comes along.
    let id = child.save(&b.store, Some("evolved")).unwrap();
    let chain = lineage(&b.store, &id).unwrap();
    let ops: Vec<String> = chain.iter().map(|r| r.edit.summary()).collect();
    assert_eq!(
        ops,
        [
            "remove goal".to_string(),
            "set system prompt to \"v2\"".to_string(),
            format!("merge {}", other.id().short()),
            "set config of guard to {\"window\":8}".to_string(),
            format!("insert pin (component {})", b.ids["pin"].short()),
        ]
    );
    assert_eq!(chain[0].child, id);
    assert_eq!(chain.last().unwrap().parent, base.id());
    for pair in chain.windows(2) {
        assert_eq!(pair[0].parent, pair[1].child);
    }
    // gc with no grace period keeps everything the name ref reaches.
    b.store.gc_with(&crate::store::GcOptions { grace: std::time::Duration::ZERO }).unwrap();
    assert_eq!(lineage(&b.store, &id).unwrap(), chain);
    assert!(b.store.has(&other.id()));
    // Replaying the recorded edits from the root gives the same child.
    let mut replay = b.workshop.load(&base.id()).unwrap();
    for record in chain.iter().rev() {
        let parent = replay.id();
        replay = replay.apply(&record.edit, &b.store).unwrap();
        assert_eq!((parent, replay.id()), (record.parent, record.child));
    }
    assert_eq!(replay.id(), id);
    // A harness with no recorded parent has an empty lineage.
    assert!(lineage(&b.store, &base.id()).unwrap().is_empty());
}

#[test]
fn edits_round_trip_as_json() {
    let b = bench();
    let mut entry = b.entry("guard");
    entry.on_fault = crate::sandbox::FailurePolicy::Disable { after: 2 };
    entry.grants.net = vec!["example.com".into()];
    for edit in [
        Edit::Insert { name: "guard".into(), processor: entry.clone() },
        Edit::Replace { target: "loop-guard".into(), name: "guard".into(), processor: entry },
        Edit::Remove { target: "x".into() },
        Edit::Merge { other: b.ids["trim"] },
        Edit::SetConfig { target: "x".into(), config: json!({"a": [1, 2]}).as_object().unwrap().clone() },
        Edit::SetSystem { text: "hi".into() },
        Edit::AppendSystemLine { line: "Check your work.".into() },
    ] {
        assert_eq!(Edit::from_json(&edit.to_json()).unwrap(), edit);
    }
}

#[test]
fn a_system_line_is_appended_once_and_recorded_as_such() {
    let b = bench();
    let base = b.harness("system = \"Be careful.\\n{tools}\"\n[[processors]]\ncomponent = \"{guard}\"\n");
    let child = base.append_system_line("  Read every tool error.  ").unwrap();
    assert_eq!(child.system(), "Be careful.\n{tools}\nRead every tool error.");
    let link = child.lineage().expect("an appended line is an edit");
    assert_eq!(link.edit, Edit::AppendSystemLine { line: "Read every tool error.".into() });
    assert_eq!(link.edit.summary(), "append to system prompt \"Read every tool error.\"");
    // A line the prompt already has (or a blank one) changes nothing.
    for same in ["Read every tool error.", "Be careful.", "   "] {
        let again = child.append_system_line(same).unwrap();
        assert_eq!(again.id(), child.id(), "{same:?}");
        assert_eq!(again.lineage().unwrap().edit, link.edit, "nothing new is recorded for {same:?}");
    }
    // On an empty prompt the line is the whole prompt.
    let bare = b.harness("[[processors]]\ncomponent = \"{guard}\"\n");
    assert_eq!(bare.append_system_line("Only this.").unwrap().system(), "Only this.");
    // The recorded edit replays to the same child.
    assert_eq!(base.apply(&link.edit, &b.store).unwrap().id(), child.id());
}

#[test]
fn a_reason_rides_in_the_lineage_record_and_keeps_its_object() {
    let b = bench();
    let base = b.harness("[[processors]]\ncomponent = \"{guard}\"\n");
    let why = b.store.put(br#"{"candidate":"C-R1-01","verdict":"shipped"}"#).unwrap();
    let child = base.insert(b.entry("trim")).unwrap().with_reason(why);
    assert_eq!(child.lineage().unwrap().reason, Some(why));
    let id = child.save(&b.store, Some("explained")).unwrap();
    let chain = lineage(&b.store, &id).unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].reason, Some(why));
    let record: serde_json::Value = serde_json::from_slice(&b.store.get(&chain[0].record).unwrap()).unwrap();
    assert_eq!(record["reason"], json!(why.to_hex()), "{record}");
    // gc keeps the explaining object as long as the child is reachable.
    b.store.gc_with(&crate::store::GcOptions { grace: std::time::Duration::ZERO }).unwrap();
    assert!(b.store.has(&why));
    // Without a reason the record has no such key (so old records keep their ids);
    // a harness not derived here has nothing to explain.
    let plain = base.insert(b.entry("pin")).unwrap();
    plain.save(&b.store, None).unwrap();
    let record = b.store.get(&lineage(&b.store, &plain.id()).unwrap()[0].record).unwrap();
    assert!(!String::from_utf8_lossy(&record).contains("reason"));
    assert!(base.with_reason(why).lineage().is_none());
}

#[test]
fn diff_names_what_changed() {
    let b = bench();
    let a = b.harness("system = \"line one\\nline two\\n\"\n[tools]\ndeny = [\"a\"]\n[[processors]]\ncomponent = \"{guard}\"\nconfig = { window = 12, keep = true }\n[[processors]]\ncomponent = \"{trim}\"\n");
    let c = b.harness("system = \"line one\\nline 2\\n\"\n[tools]\ndeny = [\"b\"]\n[[processors]]\ncomponent = \"{guard}\"\nconfig = { window = 8, keep = true, extra = 1 }\nlimits = { fuel = 5000 }\non-fault = \"abort\"\n[[processors]]\ncomponent = \"{pin}\"\n");
    let d = diff(&a, &c);
    assert_eq!(
        d.processors,
        [
            Change::Changed {
                name: "guard".into(),
                details: vec![
                    "config.extra: (unset) → 1".into(),
                    "config.window: 12 → 8".into(),
                    "limits.fuel: 10000000 → 5000".into(),
                    "on-fault: skip → abort".into(),
                ]
            },
            Change::Removed { name: "trim".into(), component: b.ids["trim"] },
            Change::Added { name: "pin".into(), component: b.ids["pin"] },
        ]
    );
    assert_eq!(d.tools, ["deny + b", "deny - a"]);
    let system = d.system.as_deref().unwrap();
    assert!(system.contains("-line two\n+line 2\n"), "{system}");
    assert!(diff(&a, &a).is_empty());
}

// ---------------------------------------------------------------- example manifests

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn example_manifests_parse() {
    let stock_path = repo().join("harnesses/stock.toml");
    let stock = Manifest::parse(&stock_path, &std::fs::read_to_string(&stock_path).unwrap()).unwrap();
    assert_eq!(stock.name(), "stock");
    let sources: Vec<String> = stock
        .processors()
        .map(|r| match r {
            ProcessorRef::Source(dir) => dir.file_name().unwrap().to_string_lossy().into_owned(),
            other => panic!("stock names processors by source, not {other:?}"),
        })
        .collect();
    assert_eq!(sources, ["loop-guard", "tool-call-repair", "goal-pin", "observation-trim", "step-budget", "history-compactor", "notes"]);
    for r in stock.processors() {
        let ProcessorRef::Source(dir) = r else { unreachable!() };
        assert!(dir.join("Cargo.toml").is_file(), "{} has no crate", dir.display());
    }
    let static_path = repo().join("harnesses/static.toml");
    let st = Manifest::parse(&static_path, &std::fs::read_to_string(&static_path).unwrap()).unwrap();
    assert_eq!(st.processors().count(), 0);
    assert!(!st.system().is_empty());
    let b = bench();
    let h = b.workshop.resolve(&st).unwrap();
    assert_eq!((h.name.as_str(), h.harness.processors().len()), ("static", 0));
}

mod real {
    //! The same paths over real components: the stock processors as built
    //! by `make guests` (or built here once, if missing).
    use std::path::PathBuf;
    use std::sync::OnceLock;

    use super::*;
    use crate::sandbox::{Pipeline, Runtime, RuntimeConfig};

    const STOCK: [&str; 7] = ["loop-guard", "tool-call-repair", "goal-pin", "observation-trim", "step-budget", "history-compactor", "notes"];

    fn runtime() -> &'static Runtime {
        static RT: OnceLock<Runtime> = OnceLock::new();
        RT.get_or_init(|| Runtime::new(RuntimeConfig { pooling: false, ..Default::default() }).unwrap())
    }

    fn guest_dir() -> PathBuf {
        repo().join("target/guest")
    }

    /// The component of stock processor `name`: the file `make guests`
    /// built, else one build of the crate shared by every test.
    fn component(name: &str) -> Option<&'static [u8]> {
        type Built = Mutex<HashMap<String, Option<&'static [u8]>>>;
        static BUILT: OnceLock<Built> = OnceLock::new();
        let cache = BUILT.get_or_init(Default::default);
        let mut cache = cache.lock().unwrap();
        *cache.entry(name.to_string()).or_insert_with(|| {
            let out = std::env::var_os("KILN_GUEST_OUT").map(PathBuf::from).unwrap_or_else(|| guest_dir().join("wasm32-wasip2/release"));
            let file = out.join(format!("{}.wasm", name.replace('-', "_")));
            let bytes = std::fs::read(&file).ok().or_else(|| crate::build::build_processor(&repo().join("processors").join(name), &guest_dir()).ok())?;
            Some(Box::leak(bytes.into_boxed_slice()))
        })
    }

    fn workshop() -> (tempfile::TempDir, Workshop) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join(".kiln")).unwrap();
        let w = Workshop::new(runtime(), &store, guest_dir());
        (dir, w)
    }

    #[test]
    fn loop_guard_resolves_configures_and_instantiates() {
        let Some(bytes) = component("loop-guard") else { panic!("loop-guard neither built nor buildable") };
        let (_dir, w) = workshop();
        let id = w.store.put(bytes).unwrap();
        let text = format!("name = \"guarded\"\n[[processors]]\ncomponent = \"{}\"\nconfig = {{ window = 8, advise_after = 2, block_after = 3 }}\non-fault = \"disable\"\nafter = 2\n", id.short());
        let authored = w.resolve(&Manifest::parse(Path::new("guarded.toml"), &text).unwrap()).unwrap();
        let h = &authored.harness;
        let p = &h.processors()[0];
        assert_eq!((p.name(), p.facts.info.group.as_deref()), ("loop-guard", Some("loop-guard")));
        assert_eq!(p.facts.info.hooks, [Hook::BeforeTool, Hook::AfterTool]);
        let specs = h.processor_specs(runtime(), &w.store).unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].instance.config, r#"{"advise_after":2,"block_after":3,"window":8}"#);
        assert_eq!(specs[0].policy, crate::sandbox::FailurePolicy::Disable { after: 2 });
        let pipeline = Pipeline::new(runtime(), specs, "task", 7, 10).map_err(|(n, f)| format!("{n}: {f}")).unwrap();
        assert_eq!(pipeline.names(), ["loop-guard"]);
        // The probe configures the processor, so a config it refuses fails at resolve time.
        let bad = text.replace("block_after = 3", "block_after = 1");
        let e = w.resolve(&Manifest::parse(Path::new("guarded.toml"), &bad).unwrap()).unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (4, "`loop-guard` refused this config"));
        assert!(e.help.as_deref().unwrap().contains("block_after"), "{e}");
        // An edit configures it too.
        let err = h.set_config("loop-guard", json!({"advise_after": 0})).unwrap_err();
        assert!(err.to_string().contains("advise_after"), "{err}");
    }

    #[test]
    fn a_processor_crate_named_by_source_is_built_and_stored() {
        let (_dir, w) = workshop();
        let manifest = repo().join("harnesses/guard-only.toml");
        let text = "[[processors]]\nsource = \"../processors/loop-guard\"\n";
        let authored = w.resolve(&Manifest::parse(&manifest, text).unwrap()).unwrap();
        let p = &authored.harness.processors()[0];
        assert_eq!(p.name(), "loop-guard");
        assert!(w.store.has(&p.entry.component), "the built component is in the store");
    }

    #[test]
    fn the_built_stock_processors_compose() {
        let (_dir, w) = workshop();
        let mut text = String::from("name = \"stock\"\n");
        let mut present = Vec::new();
        for name in STOCK {
            if let Some(bytes) = component(name) {
                let id = w.store.put(bytes).unwrap();
                text += &format!("[[processors]]\ncomponent = \"{id}\"\n");
                present.push(name);
            }
        }
        assert!(present.contains(&"loop-guard"), "at least loop-guard is built");
        let h = w.resolve(&Manifest::parse(Path::new("stock.toml"), &text).unwrap()).unwrap().harness;
        let mut got: Vec<&str> = names(&h);
        got.sort();
        present.sort();
        assert_eq!(got, present);
        let specs = h.processor_specs(runtime(), &w.store).unwrap();
        assert_eq!(specs.len(), present.len());
        let id = h.save(&w.store, Some("stock")).unwrap();
        assert_eq!(w.load(&id).unwrap().id(), id);
    }
}

//! The checker on histories whose answer is known: small scenarios written out by hand, and
//! long ones simulated from a register with a fixed seed.

use super::*;

/// Operations on key `k` by client `c` over `[from, to]`.
fn op(c: u64, from: u64, to: u64, call: Call, out: Output) -> Operation {
    Operation {
        client: c,
        invoked: from,
        completed: to,
        call,
        outcome: Outcome::Ok(out),
    }
}

fn k() -> Vec<u8> {
    b"k".to_vec()
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn set(c: u64, from: u64, to: u64, value: &str) -> Operation {
    let call = Call::Set {
        key: k(),
        value: v(value),
    };
    op(c, from, to, call, Output::Written)
}

fn del(c: u64, from: u64, to: u64) -> Operation {
    op(c, from, to, Call::Delete { key: k() }, Output::Written)
}

fn get(c: u64, from: u64, to: u64, seen: Option<&str>) -> Operation {
    op(
        c,
        from,
        to,
        Call::Get { key: k() },
        Output::Read(seen.map(v)),
    )
}

fn cas(
    c: u64,
    from: u64,
    to: u64,
    expected: Option<&str>,
    new: Option<&str>,
    swapped: bool,
) -> Operation {
    let call = Call::CompareAndSet {
        key: k(),
        expected: expected.map(v),
        new: new.map(v),
    };
    op(c, from, to, call, Output::Swapped(swapped))
}

fn unknown(mut o: Operation) -> Operation {
    o.outcome = Outcome::Unknown;
    o
}

fn on(key: &str, mut o: Operation) -> Operation {
    let key = v(key);
    match &mut o.call {
        Call::Get { key: k }
        | Call::Set { key: k, .. }
        | Call::Delete { key: k }
        | Call::CompareAndSet { key: k, .. } => *k = key,
    }
    o
}

fn verdict(ops: Vec<Operation>) -> Verdict {
    check(&History::from(ops)).unwrap()
}

fn violation(ops: Vec<Operation>) -> Violation {
    match verdict(ops) {
        Verdict::NotLinearizable(v) => v,
        other => panic!("expected a violation, got {other}"),
    }
}

#[track_caller]
fn assert_linearizable(ops: Vec<Operation>) {
    let got = verdict(ops);
    assert!(got.is_linearizable(), "{got}");
}

#[test]
fn overlapping_operations_may_take_effect_in_either_order() {
    // b's set overlaps a's and wins; the reads after both see b, a read during both may see
    // either (here: a, which is ordered before b).
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        set(2, 5, 15, "b"),
        get(3, 3, 8, Some("a")),
        get(3, 16, 20, Some("b")),
        get(4, 17, 30, Some("b")),
    ]);
    // The same writes with the other winner.
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        set(2, 5, 15, "b"),
        get(3, 16, 20, Some("a")),
    ]);
    // A read concurrent with a delete sees the value or its absence.
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        del(2, 20, 30),
        get(3, 21, 29, Some("a")),
        get(4, 22, 28, None),
        get(3, 31, 40, None),
    ]);
    // Concurrent compare-and-sets: exactly one of two from the same value succeeds.
    assert_linearizable(vec![
        set(1, 0, 10, "x"),
        cas(2, 20, 30, Some("x"), Some("y"), true),
        cas(3, 21, 31, Some("x"), Some("z"), false),
        get(1, 40, 50, Some("y")),
    ]);
    // Touching intervals count as concurrent.
    assert_linearizable(vec![set(1, 0, 10, "a"), get(2, 10, 20, None)]);
}

#[test]
fn a_stale_read_after_a_completed_write_is_a_violation() {
    let found = violation(vec![
        set(1, 0, 10, "a"),
        set(2, 20, 30, "b"),
        get(3, 40, 50, Some("a")),
    ]);
    assert_eq!(found.key, k());
    assert_eq!(found.ops.len(), 3);
    assert_eq!(found.of, 3);
}

#[test]
fn a_read_of_absence_before_any_write_completes_is_fine_but_not_after() {
    assert_linearizable(vec![set(1, 0, 10, "a"), get(2, 5, 8, None)]);
    let found = violation(vec![set(1, 0, 10, "a"), get(2, 11, 12, None)]);
    assert_eq!(found.ops.len(), 2);
}

#[test]
fn a_lost_update_two_swaps_from_one_value_is_a_violation() {
    let found = violation(vec![
        set(1, 0, 10, "x"),
        cas(2, 20, 30, Some("x"), Some("y"), true),
        cas(3, 21, 31, Some("x"), Some("z"), true),
        get(1, 40, 50, Some("z")),
    ]);
    // The read is not needed to show it.
    assert_eq!(found.ops.len(), 3, "{found}");
    assert!(found
        .ops
        .iter()
        .all(|o| !matches!(o.call, Call::Get { .. })));
}

#[test]
fn a_read_going_back_in_time_is_a_violation() {
    // The second write is slow; one reader sees it, then sees the old value again.
    let found = violation(vec![
        set(1, 0, 10, "a"),
        set(2, 20, 100, "b"),
        get(3, 30, 40, Some("b")),
        get(3, 50, 60, Some("a")),
    ]);
    assert_eq!(found.ops.len(), 4, "{found}");
    // Each read on its own is fine.
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        set(2, 20, 100, "b"),
        get(3, 50, 60, Some("a")),
    ]);
}

#[test]
fn a_read_of_a_deleted_value_is_a_violation() {
    let found = violation(vec![
        set(1, 0, 10, "a"),
        del(2, 20, 30),
        get(3, 40, 50, Some("a")),
    ]);
    assert_eq!(found.ops.len(), 3);
}

#[test]
fn a_failed_swap_needs_a_reason() {
    // Nothing changed x, yet the swap from x failed.
    violation(vec![
        set(1, 0, 10, "x"),
        cas(2, 20, 30, Some("x"), Some("y"), false),
    ]);
    // A concurrent write explains it.
    assert_linearizable(vec![
        set(1, 0, 10, "x"),
        set(3, 15, 25, "w"),
        cas(2, 20, 30, Some("x"), Some("y"), false),
    ]);
    // From absence: it must succeed on an absent key, and fail on a present one.
    assert_linearizable(vec![cas(1, 0, 10, None, Some("a"), true)]);
    violation(vec![cas(1, 0, 10, None, Some("a"), false)]);
    violation(vec![
        set(1, 0, 10, "a"),
        cas(2, 20, 30, None, Some("b"), true),
    ]);
    // A swap to absence deletes.
    violation(vec![
        set(1, 0, 10, "a"),
        cas(2, 20, 30, Some("a"), None, true),
        get(3, 40, 50, Some("a")),
    ]);
}

#[test]
fn an_unknown_write_may_have_applied_or_not() {
    // Applied: later reads see it.
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        unknown(set(2, 20, 30, "b")),
        get(3, 40, 50, Some("b")),
        get(3, 60, 70, Some("b")),
    ]);
    // Never applied.
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        unknown(set(2, 20, 30, "b")),
        get(3, 40, 50, Some("a")),
        get(3, 60, 70, Some("a")),
    ]);
    // Applied late: after the client gave up and a read saw the old value.
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        unknown(set(2, 20, 30, "b")),
        get(3, 40, 50, Some("a")),
        get(3, 60, 70, Some("b")),
    ]);
    // But once seen, it stays applied.
    let found = violation(vec![
        set(1, 0, 10, "a"),
        unknown(set(2, 20, 30, "b")),
        get(3, 60, 70, Some("b")),
        get(3, 80, 90, Some("a")),
    ]);
    assert_eq!(found.ops.len(), 4, "{found}");
    // It cannot take effect before it was invoked.
    violation(vec![
        set(1, 0, 10, "a"),
        get(3, 12, 15, Some("b")),
        unknown(set(2, 20, 30, "b")),
    ]);
}

#[test]
fn an_unknown_swap_may_have_applied_only_from_its_expected_value() {
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        unknown(cas(2, 20, 30, Some("a"), Some("b"), true)),
        get(3, 40, 50, Some("b")),
    ]);
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        unknown(cas(2, 20, 30, Some("a"), Some("b"), false)),
        get(3, 40, 50, Some("a")),
    ]);
    // The value moved on before the swap began, so it cannot have swapped.
    violation(vec![
        set(1, 0, 10, "a"),
        set(1, 11, 15, "c"),
        unknown(cas(2, 20, 30, Some("a"), Some("b"), true)),
        get(3, 40, 50, Some("b")),
    ]);
    // An unknown delete explains an absence.
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        unknown(del(2, 20, 30)),
        get(3, 40, 50, None),
    ]);
}

#[test]
fn an_unknown_read_says_nothing() {
    assert_linearizable(vec![
        set(1, 0, 10, "a"),
        unknown(get(2, 20, 30, Some("never written"))),
    ]);
}

#[test]
fn keys_are_checked_separately_and_the_failing_one_is_named() {
    let found = violation(vec![
        on("a", set(1, 0, 10, "1")),
        on("b", set(1, 11, 20, "2")),
        on("a", get(2, 30, 40, Some("1"))),
        on("b", get(2, 41, 50, None)),
    ]);
    assert_eq!(found.key, b"b".to_vec());
    assert_eq!(found.of, 2);
}

#[test]
fn malformed_histories_are_refused() {
    let backwards = vec![get(1, 10, 5, None)];
    assert!(matches!(
        check(&History::from(backwards)),
        Err(HistoryError::Malformed { index: 0, .. })
    ));
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A linearizable history of `n` operations by `clients` concurrent clients on `keys` keys:
/// each operation takes effect at a random point of its interval on a real register map.
fn simulate(seed: u64, clients: u64, keys: u64, n: usize) -> Vec<Operation> {
    let mut rng = Rng(seed);
    let mut clock = vec![0u64; clients as usize];
    // Each operation with the point at which it takes effect; outputs are filled in later,
    // in the order of the points.
    let mut planned: Vec<(u64, Operation)> = Vec::new();
    for i in 0..n {
        let c = rng.below(clients) as usize;
        let from = clock[c] + rng.below(20);
        let to = from + 1 + rng.below(200);
        let point = from + rng.below(to - from + 1);
        clock[c] = to + 1;
        let key = format!("k{}", rng.below(keys)).into_bytes();
        let value = format!("c{c}-{i}").into_bytes();
        let call = match rng.below(10) {
            0..=3 => Call::Get { key },
            4..=5 => Call::Set { key, value },
            6 => Call::Delete { key },
            _ => Call::CompareAndSet {
                key,
                expected: None,
                new: Some(value),
            },
        };
        planned.push((
            point,
            Operation {
                client: c as u64,
                invoked: from,
                completed: to,
                call,
                outcome: Outcome::Unknown,
            },
        ));
    }
    planned.sort_by_key(|(p, _)| *p);
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut remembered: Vec<Option<Vec<u8>>> = vec![None; clients as usize];
    for (_, o) in &mut planned {
        let key = o.key().to_vec();
        let cur = store.get(&key).cloned();
        o.outcome = Outcome::Ok(match &o.call {
            Call::Get { .. } => {
                remembered[o.client as usize] = cur.clone();
                Output::Read(cur)
            }
            Call::Set { value, .. } => {
                store.insert(key, value.clone());
                Output::Written
            }
            Call::Delete { .. } => {
                store.remove(&key);
                Output::Written
            }
            Call::CompareAndSet { new, .. } => {
                // Expect the value this client last read, when it has one.
                let expected = remembered[o.client as usize].clone().or(cur.clone());
                let ok = expected == cur;
                if ok {
                    match new {
                        Some(v) => store.insert(key, v.clone()),
                        None => store.remove(&key),
                    };
                }
                if let Call::CompareAndSet { expected: e, .. } = &mut o.call {
                    *e = expected;
                }
                Output::Swapped(ok)
            }
        });
    }
    planned.into_iter().map(|(_, o)| o).collect()
}

#[test]
fn long_concurrent_simulated_histories_are_linearizable() {
    for seed in [1, 2, 3] {
        let ops = simulate(seed, 8, 2, 4000);
        let got = check(&History::from(ops)).unwrap();
        assert!(got.is_linearizable(), "seed {seed}: {got}");
    }
}

#[test]
fn long_histories_with_unknown_outcomes_are_linearizable() {
    // Every tenth write loses its answer; whether it applied is up to the checker to find.
    let mut ops = simulate(7, 8, 2, 3000);
    for (i, o) in ops.iter_mut().enumerate() {
        if i % 10 == 0 && !matches!(o.call, Call::Get { .. }) {
            o.outcome = Outcome::Unknown;
        }
    }
    let got = check(&History::from(ops)).unwrap();
    assert!(got.is_linearizable(), "{got}");
}

#[test]
fn a_planted_stale_read_in_a_long_history_shrinks_to_a_few_operations() {
    let mut ops = simulate(11, 8, 1, 3000);
    // Find a read of a value, after which (strictly) a write of another value completed;
    // make a read after that write see the first value again.
    ops.sort_by_key(|o| o.invoked);
    let (mut old, mut write_done) = (None, None);
    for o in &ops {
        match (&o.call, &o.outcome, old.is_some()) {
            (Call::Get { .. }, Outcome::Ok(Output::Read(Some(v))), false) if o.invoked > 10_000 => {
                old = Some((v.clone(), o.completed))
            }
            (Call::Set { .. }, _, true) if o.invoked > old.as_ref().map_or(0, |x| x.1) => {
                write_done = Some(o.completed);
                break;
            }
            _ => {}
        }
    }
    let (old, write_done) = (old.unwrap().0, write_done.unwrap());
    let stale = ops
        .iter_mut()
        .find(|o| matches!(o.call, Call::Get { .. }) && o.invoked > write_done)
        .unwrap();
    stale.outcome = Outcome::Ok(Output::Read(Some(old.clone())));
    let found = violation(ops);
    assert!(
        (2..=4).contains(&found.ops.len()),
        "a small witness expected: {found}"
    );
    assert!(
        found
            .ops
            .iter()
            .any(|o| o.outcome == Outcome::Ok(Output::Read(Some(old.clone())))),
        "{found}"
    );
    let text = found.to_string();
    assert!(text.starts_with("not linearizable: key \"k0\": "), "{text}");
    assert_eq!(text.lines().count(), 2 + found.ops.len(), "{text}");
}

#[test]
fn shrinking_keeps_the_write_a_read_saw() {
    // Removing the write of "a" would leave the read of "a" unexplained — a violation the
    // shrinker must not invent; the witness keeps it.
    let found = violation(vec![
        set(1, 0, 10, "a"),
        set(2, 12, 14, "x"),
        set(2, 20, 30, "b"),
        get(3, 40, 50, Some("a")),
    ]);
    assert_eq!(found.ops.len(), 3, "{found}");
    assert!(found.ops.iter().any(|o| o.call
        == Call::Set {
            key: k(),
            value: v("a")
        }));
}

#[test]
fn a_read_of_a_value_nobody_wrote_is_its_own_witness() {
    let mut ops: Vec<Operation> = (0..50).map(|i| set(1, i * 10, i * 10 + 5, "w")).collect();
    ops.push(get(2, 1000, 1010, Some("ghost")));
    let found = violation(ops);
    assert_eq!(found.ops.len(), 1, "{found}");
}

#[test]
fn a_search_past_its_budget_is_inconclusive() {
    let ops = simulate(5, 8, 1, 500);
    let options = CheckOptions {
        max_steps: 50,
        ..CheckOptions::default()
    };
    match check_with(&History::from(ops), &options).unwrap() {
        Verdict::Inconclusive { key, ops, steps } => {
            assert_eq!(key, b"k0".to_vec());
            assert_eq!(ops, 500);
            assert_eq!(steps, 50);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_violation_reads_one_operation_per_line() {
    let found = violation(vec![
        set(1, 1_000, 11_000, "a"),
        set(2, 21_000, 31_000, "b"),
        unknown(set(4, 32_000, 33_000, "c")),
        get(3, 41_000, 51_500, Some("a")),
    ]);
    let text = found.to_string();
    let expected = "\
not linearizable: key \"k\": no order of its 4 operations explains what the 3 below returned
  (times in µs after the first invocation; '?': the outcome is unknown)
  client    1  [       0.0 ..       10.0]  set \"k\" = \"a\"  -> ok
  client    2  [      20.0 ..       30.0]  set \"k\" = \"b\"  -> ok
  client    3  [      40.0 ..       50.5]  get \"k\"        -> read \"a\"
";
    assert_eq!(text, expected);
}

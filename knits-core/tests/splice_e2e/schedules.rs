//! Random schedules (proptest, deterministic unless `KNITS_E2E_SEED` says otherwise).

use knits_core::wire::control::ReplyCode;
use proptest::prelude::*;

use crate::net::HOSTS;
use crate::params::{ConnSpec, Faults, Mode, Params};
use crate::request::Req;
use crate::run::run;

/// A request; with `uploads`, some carry a body.
fn req(uploads: bool) -> impl Strategy<Value = Req> {
    let size = prop_oneof![
        Just(0u32),
        Just(1),
        1..3000u32,
        Just(1460),
        Just(2920),
        10_000..80_000u32
    ];
    let body = if uploads {
        prop_oneof![3 => Just(0u32), 1 => 1..20_000u32].boxed()
    } else {
        Just(0u32).boxed()
    };
    (1..=3u8, size, any::<bool>(), body).prop_map(|(target, size, wait, body)| Req {
        target,
        size,
        wait,
        body,
        ..Req::default()
    })
}

/// A connection; one in five half-closes after its last request.
fn conn(uploads: bool) -> impl Strategy<Value = ConnSpec> {
    (
        1..40u64,
        prop::collection::vec(req(uploads), 1..=5),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(start_ms, reqs, half_close)| ConnSpec {
            start_ms,
            reqs,
            half_close,
            ..ConnSpec::default()
        })
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![8 => Just(Mode::Normal), 1 => Just(Mode::Mute), 1 => Just(Mode::Reset)]
}

prop_compose! {
    /// A schedule; the client offers timestamps and SACK three times in four (each).
    fn params(uploads: bool)(
        seed in any::<u64>(),
        conns in prop::collection::vec(conn(uploads), 1..=2),
        loss in prop_oneof![Just(0u32), 0..400u32],
        dup in prop_oneof![Just(0u32), 0..400u32],
        reorder in prop_oneof![Just(0u32), 0..600u32],
        isn in any::<[u32; HOSTS]>(),
        ts_off in any::<[u32; HOSTS]>(),
        m3 in mode(),
        client_ts in prop::bool::weighted(0.75),
        client_sack in prop::bool::weighted(0.75),
    ) -> Params {
        let mut p = Params::new(seed, conns);
        p.faults = Faults { loss, dup, reorder, max_delay: 8, drop_first: [0; 3] };
        p.isn = isn;
        p.ts_off = ts_off;
        p.modes[3] = m3;
        p.client_ts = client_ts;
        p.client_sack = client_sack;
        p
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    // Deterministic: a fixed generator seed (KNITS_E2E_SEED to explore others, and
    // KNITS_E2E_CASES for more cases) and no regression file; schedules that found bugs
    // are kept below as named tests.
    #![proptest_config(ProptestConfig {
        cases: env("KNITS_E2E_CASES", 32) as u32,
        max_shrink_iters: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(env("KNITS_E2E_SEED", 0x4b4e_4954_5321)),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any schedule (seeds, request mixes, fault rates, ISNs and clocks anywhere in 2^32, a
    /// hung or resetting node 3, clients without timestamps or SACK, half-closed clients):
    /// the invariants of `run` hold, hand-offs end completed or rolled back, and without
    /// faults or misbehaving nodes every request is served by the node it names.
    /// `KNITS_E2E_CASES=n` runs more cases.
    #[test]
    fn random_schedules(p in params(false)) {
        check_schedule(p)?;
    }

    /// The same with uploads (request bodies).
    #[test]
    #[ignore = "bug: uploads pipelined behind requests for other nodes, under loss and \
                reordering with SACK: seed 1008772476160904294 stalls (the old node SACKed \
                bytes it then never got past its faked FIN; the client does not resend them)"]
    fn random_schedules_with_uploads(p in params(true)) {
        check_schedule(p)?;
    }
}

fn check_schedule(p: Params) -> Result<(), TestCaseError> {
    let clean = !p.faults.any() && p.modes.iter().all(|m| *m == Mode::Normal);
    let want = p.targets();
    let o = run(p);
    prop_assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
    if clean {
        // The only refusal on a clean network: a hand-off while the history is full of
        // old nodes still being retired (MAX_BINDINGS).
        let too_many = o
            .codes
            .iter()
            .filter(|c| **c == ReplyCode::TooManyHops)
            .count();
        let other = o.codes.iter().filter(|c| {
            !matches!(
                c,
                ReplyCode::Accepted | ReplyCode::Busy | ReplyCode::TooManyHops
            )
        });
        prop_assert_eq!(other.count(), 0, "{}", o.summary);
        let wrong: usize = o
            .served_by
            .iter()
            .zip(&want)
            .map(|(got, want)| got.iter().zip(want).filter(|(g, w)| g != w).count())
            .sum();
        prop_assert!(
            wrong <= too_many,
            "{} served by the wrong node\n{}",
            wrong,
            o.summary
        );
        prop_assert_eq!(o.rolled_back, 0, "{}", o.summary);
    }
    Ok(())
}

//! The simulator's scenarios. Each failure message carries the seed.

use splitup_protocol::Params;
use splitup_sim::{run, Config, Summary};

fn sim(cfg: &Config) -> Summary {
    run(cfg, &mut |_, _| {}).unwrap_or_else(|f| panic!("{f}"))
}

#[test]
fn honest_network_completes_everything_and_validation_costs_about_p() {
    let cfg = Config {
        seed: 11,
        nodes: 100,
        executions: 1000,
        ..Config::default()
    };
    let s = sim(&cfg);
    assert_eq!(s.completed, 1000, "seed {}: {:?}", cfg.seed, s.failed);
    assert!(s.failed.is_empty());
    assert_eq!(s.slashes, 0, "seed {}: honest nodes were slashed", cfg.seed);
    let p = cfg.params.challenge_ppm as f64 / 1e6;
    // 4000 results: the binomial standard deviation of the rate is ~0.0043.
    let overhead = s.validation_overhead();
    assert!(
        (overhead - p).abs() < 0.02,
        "seed {}: validation overhead {overhead:.4} vs p = {p}",
        cfg.seed
    );
    eprintln!("{s:?}");
}

#[test]
fn a_seed_replays_identically() {
    let cfg = Config {
        seed: 5,
        nodes: 40,
        executions: 200,
        crash_frac: 0.1,
        lazy_frac: 0.2,
        lazy_q: 0.5,
        collude_frac: 0.1,
        slow_frac: 0.1,
        partition_frac: 0.1,
        ..Config::default()
    };
    let mut a = sim(&cfg);
    let mut b = sim(&cfg);
    for s in [&mut a, &mut b] {
        s.ledger_time = Default::default();
        s.vrf_time = Default::default();
    }
    assert_eq!(a, b, "seed {} did not replay identically", cfg.seed);
    let other = sim(&Config { seed: 6, ..cfg.clone() });
    assert_ne!(
        a.final_blockhash, other.final_blockhash,
        "different seeds should differ"
    );
}

#[test]
fn ten_percent_of_nodes_crashing_mid_run_loses_no_execution() {
    // Submissions spread over 200 s, so crashed nodes miss 90 s of heartbeats before the end.
    let cfg = Config {
        seed: 21,
        nodes: 100,
        executions: 1000,
        crash_frac: 0.1,
        submit_every_ms: 200,
        ..Config::default()
    };
    let s = sim(&cfg);
    assert_eq!(s.completed, 1000, "seed {}: failed {:?}", cfg.seed, s.failed);
    assert!(s.reassignments > 0, "seed {}: crashed nodes held no task?", cfg.seed);
    assert!(
        s.nodes_marked_unresponsive >= 5,
        "seed {}: {} nodes marked unresponsive",
        cfg.seed,
        s.nodes_marked_unresponsive
    );
    assert_eq!(s.honest_stake_lost, 0);
}

#[test]
fn slow_and_partitioned_nodes_do_not_lose_executions() {
    let cfg = Config {
        seed: 23,
        nodes: 60,
        executions: 500,
        slow_frac: 0.2,
        slow_factor: 20,
        partition_frac: 0.2,
        partition_ms: 200_000,
        ..Config::default()
    };
    let s = sim(&cfg);
    assert_eq!(s.completed, 500, "seed {}: failed {:?}", cfg.seed, s.failed);
    assert!(
        s.reassignments > 0,
        "seed {}: a 40 s task on a 30 s timeout must be reassigned",
        cfg.seed
    );
}

#[test]
fn lazy_nodes_are_caught_and_lose_stake_while_honest_nodes_lose_none() {
    let cfg = Config {
        seed: 31,
        nodes: 50,
        executions: 3000,
        lazy_frac: 0.2,
        lazy_q: 0.5,
        ..Config::default()
    };
    let s = sim(&cfg);
    assert_eq!(s.completed, 3000, "seed {}: failed {:?}", cfg.seed, s.failed);
    assert!(s.lazy_nodes >= 5, "seed {}: only {} lazy nodes", cfg.seed, s.lazy_nodes);
    assert!(s.frauds_caught > 0);
    assert_eq!(
        s.lazy_nodes_net_loss, s.lazy_nodes,
        "seed {}: every lazy node should end below its stake: {:?}",
        cfg.seed, s.first_catch
    );
    assert_eq!(s.honest_stake_lost, 0, "seed {}: an honest node was slashed", cfg.seed);
}

#[test]
fn insecure_parameters_are_refused_at_genesis() {
    let params = Params {
        challenge_ppm: 10_000,
        ..Params::default()
    };
    let err = run(
        &Config {
            params,
            executions: 1,
            nodes: 3,
            ..Config::default()
        },
        &mut |_, _| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("genesis refused")
            && msg.contains("p(1-r)(R+S)")
            && msg.contains("p = 0.01")
            && msg.contains("p must exceed"),
        "{msg}"
    );
    assert!(msg.contains("seed"), "a failure names its seed: {msg}");
}

/// Catch rate of nodes that cheat on every task, against 1 - (1 - p(1 - r))^N.
#[test]
fn catch_rate_follows_p_times_one_minus_r() {
    let cfg = Config {
        seed: 41,
        nodes: 400,
        executions: 4000,
        lazy_frac: 0.5,
        lazy_q: 1.0,
        collude_frac: 0.1,
        ..Config::default()
    };
    let s = sim(&cfg);
    let rows = splitup_sim::catch_table(&s, &cfg, &[1, 10, 20]);
    for r in &rows {
        // Binomial standard error of the measured rate, plus slack for the
        // colluding fraction being drawn per node rather than exactly r.
        let se = (r.expected * (1.0 - r.expected) / r.nodes as f64).sqrt();
        assert!(
            (r.measured - r.expected).abs() < 4.0 * se + 0.03,
            "seed {}: after {} tasks caught {:.3}, expected {:.3} ({} nodes)",
            cfg.seed,
            r.after,
            r.measured,
            r.expected,
            r.nodes
        );
    }
}

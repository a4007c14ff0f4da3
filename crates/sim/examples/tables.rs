//! The simulator's tables (scale, strategies, catch rate, the cartel's
//! share of draws) in a release build of the simulator alone, without
//! building the `splitup` binary and its engines.
//!
//! `TABLES=strategies,catch,shares EVERY=100 cargo run --release -p splitup-sim --example tables -- [nodes] [executions] [seed]`
//!
//! Every figure is a function of the same `splitup_sim::Config` that
//! `splitup sim` builds from its flags, so `splitup sim --strategy all
//! --nodes N --executions M --seed S --submit-every-ms MS` prints the same rows.

use splitup_sim::{catch_table, format_rows, run, Config, Strategy, Summary};
use std::time::Instant;

fn sim(cfg: &Config) -> Summary {
    run(cfg, &mut |_, _| {}).unwrap_or_else(|f| panic!("{f}"))
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let nodes = args.first().copied().unwrap_or(100) as usize;
    let executions = args.get(1).copied().unwrap_or(2000) as usize;
    let seed = args.get(2).copied().unwrap_or(7);
    // TABLES: any of scale, strategies, catch, shares; EVERY: ms between submissions.
    let which = std::env::var("TABLES").unwrap_or_else(|_| "strategies,catch,shares".into());
    let submit_every_ms = std::env::var("EVERY").ok().map(|v| v.parse().unwrap()).unwrap_or(200);
    let base = Config {
        seed,
        submit_every_ms,
        nodes,
        executions,
        ..Config::default()
    };
    if which.contains("scale") {
        let wall = Instant::now();
        let s = run(
            &Config {
                check_every: 1000,
                ..base.clone()
            },
            &mut |_, _| {},
        )
        .unwrap_or_else(|f| panic!("{f}"));
        println!(
            "scale, seed {seed}: {nodes} nodes, {executions} executions every {submit_every_ms} ms: {} completed ({} task results), {:.0} s virtual, {:.1} s wall; {} instructions, {:.0}/s with VRF proofs, {:.0}/s without; {} VRF proofs in {:.1} s ({:.0} us each); {} challenges ({:.2} %), validation overhead {:.4}; {} disputes",
            s.completed,
            s.task_results,
            s.virtual_ms as f64 / 1e3,
            wall.elapsed().as_secs_f64(),
            s.instructions,
            s.instructions_per_second(),
            s.instructions_per_second_without_vrf(),
            s.vrf_proofs,
            s.vrf_time.as_secs_f64(),
            s.vrf_time.as_secs_f64() * 1e6 / s.vrf_proofs.max(1) as f64,
            s.challenges,
            100.0 * s.challenges as f64 / s.task_results.max(1) as f64,
            s.validation_overhead(),
            s.disputes
        );
    }
    if which.contains("strategies") {
        println!("seed {seed}: {nodes} nodes, {executions} executions, strategy fraction {}, q {}, compute cost {} % of the fee", base.strategy_frac, base.q, base.compute_cost_pct);
        let mut rows = Vec::new();
        let wall = Instant::now();
        for strategy in Strategy::ALL {
            let s = sim(&Config {
                strategy,
                ..base.clone()
            });
            let row = s.strategy_row().cloned().expect("the strategy's row");
            eprintln!(
                "{strategy}: completed {}/{} failed {:?} verdicts {:?} refused {:?} honest stake lost {} captured {}; disputes {} ({} without validator); validator also assigned {} {:?}",
                s.completed, s.executions, s.failed, s.verdicts, s.refused, s.honest_stake_lost, s.shares.committees_captured, s.disputes, s.disputes_without_validator, s.validator_also_assigned, s.validator_also_assigned_first
            );
            rows.push(row);
            if strategy == Strategy::Honest {
                for r in &s.security {
                    println!(
                        "security, task {}: C = {:.4} USDC, R = {:.4}, S = {:.0}, p = {}, r = {}: p(1-r)(R+S) - C = {:.3} USDC ({}); compute {:.4} USDC, a lazy result's expected gain {:.3} USDC",
                        r.task, r.cost as f64 / 1e6, r.reward as f64 / 1e6, r.slash as f64 / 1e6, r.p, r.r, r.margin_usdc,
                        if r.holds { "holds" } else { "FAILS" }, r.compute as f64 / 1e6, r.cheat_gain_usdc
                    );
                }
            }
        }
        print!("{}", format_rows(&rows));
        println!("({:.1} s wall)", wall.elapsed().as_secs_f64());
    }
    if which.contains("catch") {
        let cfg = Config {
            strategy: Strategy::Lazy,
            strategy_frac: 0.5,
            q: 1.0,
            collude_frac: 0.1,
            ..base.clone()
        };
        let s = sim(&cfg);
        println!(
            "\ncatch rate: {} nodes cheat on every result, colluders' stake share r = {:.3}, p = {}",
            s.cheater_nodes,
            s.colluding_stake_share,
            cfg.params.challenge_ppm as f64 / 1e6
        );
        println!(
            "{:>8} {:>6} {:>9} {:>16} {:>22}",
            "after N", "nodes", "caught", "1-(1-p(1-r))^N", "with captured committees"
        );
        for r in catch_table(&s, &cfg, &[1, 10, 20, 50, 100]) {
            println!(
                "{:>8} {:>6} {:>9.4} {:>16.4} {:>22.4}",
                r.after, r.nodes, r.measured, r.expected, r.expected_with_committee
            );
        }
        print!("{}", format_rows(&s.groups));
        shares(&s);
    }
    if which.contains("shares") {
        // A passive cartel: 10 % of the nodes (of the stake) collude but
        // nobody cheats, so none of them is ever slashed: selection alone.
        let cfg = Config {
            collude_frac: 0.1,
            ..base.clone()
        };
        let s = sim(&cfg);
        println!("\npassive cartel (10 % of the nodes, nobody cheats):");
        shares(&s);
        // Sybils: 10 % of the stake over many minimum-stake nodes claiming
        // task 1, honest (q = 0) so none leaves the pool; every result validated.
        let mut params = base.params.clone();
        params.challenge_ppm = 1_000_000;
        let cfg = Config {
            strategy: Strategy::Sybil,
            strategy_frac: 0.1,
            q: 0.0,
            params,
            ..base.clone()
        };
        let s = sim(&cfg);
        let sybil = s.group("sybil").expect("sybils");
        let all = s.groups.iter().map(|g| g.nodes).sum::<u64>();
        println!(
            "\nsybils, honest, p = 1: {} of {} nodes ({:.4}), stake share {:.4}",
            sybil.nodes,
            all,
            sybil.nodes as f64 / all as f64,
            s.shares.stake_share
        );
        shares(&s);
        // Sybils cheating on every result they get, p = 0.08.
        let cfg = Config {
            strategy: Strategy::Sybil,
            strategy_frac: 0.1,
            q: 1.0,
            ..base.clone()
        };
        let s = sim(&cfg);
        println!("\nsybils cheating on every result (q = 1), p = 0.08:");
        print!("{}", format_rows(&s.groups));
        shares(&s);
    }
}

fn shares(s: &Summary) {
    let d = &s.shares;
    println!(
        "cartel stake share {:.4}; validator draws {} of {} = {:.4} (its share of the eligible stake at the draws {:.4}); committee seats {} of {} = {:.4} (expected {:.4}); committees captured {} of {} disputes; honest stake lost {:.0} USDC",
        d.stake_share,
        d.validators.cartel,
        d.validators.draws,
        d.validators.share(),
        d.validators.expected_share(),
        d.seats.cartel,
        d.seats.draws,
        d.seats.share(),
        d.seats.expected_share(),
        d.committees_captured,
        s.disputes,
        s.honest_stake_lost as f64 / 1e6
    );
    for (t, v) in d.validators_by_task.iter().enumerate() {
        println!(
            "  task {}: validators {} of {} = {:.4} (expected {:.4})",
            t + 1,
            v.cartel,
            v.draws,
            v.share(),
            v.expected_share()
        );
    }
}

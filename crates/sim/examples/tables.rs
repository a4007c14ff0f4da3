//! The simulator's tables (strategies, catch rate, the cartel's share of
//! draws), for BENCHMARKS.md while the `splitup` binary cannot be built.
//!
//! `cargo run --release -p splitup-sim --example tables -- [nodes] [executions] [seed]`

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
    let which = std::env::var("TABLES").unwrap_or_else(|_| "strategies,catch,shares".into());
    let submit_every_ms = std::env::var("EVERY").ok().map(|v| v.parse().unwrap()).unwrap_or(200);
    let base = Config {
        seed,
        submit_every_ms,
        nodes,
        executions,
        ..Config::default()
    };
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
        let cfg = Config {
            strategy: Strategy::Sybil,
            strategy_frac: 0.1,
            q: 1.0,
            ..base.clone()
        };
        let s = sim(&cfg);
        println!("\nsybil: {} nodes", s.group("sybil").map(|g| g.nodes).unwrap_or(0));
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

//! Synthetic calibration of the sketch tolerance: honest drift vs wrong hidden states.
//! Run: `cargo run --release -p grail-protocol --example sketch_calibration`
//! Numbers are for synthetic rows ([`grail_protocol::synthetic`]); model-backed numbers replace them.

use grail_protocol::rng::SplitMix64;
use grail_protocol::sketch::{coefficients, sketch, sketch_distance, SketchParams};
use grail_protocol::synthetic::{perturb, SyntheticModel};

const ROWS: usize = 20_000;
const TOLERANCES: [u32; 6] = [200, 400, 800, 1000, 1200, 1600];

/// P(at least K − f of K independent positions pass) with per-position pass probability `q`.
fn rollout_pass(q: f64, k: u32, max_failed: u32) -> f64 {
    (0..=max_failed)
        .map(|f| {
            let choose = (0..f).fold(1.0, |acc, i| acc * f64::from(k - i) / f64::from(i + 1));
            choose * q.powi((k - f) as i32) * (1.0 - q).powi(f as i32)
        })
        .sum()
}

fn pass_rates(distances: &[u32]) -> Vec<f64> {
    TOLERANCES
        .iter()
        .map(|&t| distances.iter().filter(|&&d| d <= t).count() as f64 / distances.len() as f64)
        .collect()
}

fn print_row(label: &str, distances: &[u32]) {
    let rates = pass_rates(distances);
    let cells: Vec<String> = rates.iter().map(|r| format!("{r:>9.5}")).collect();
    println!("| {label:<34} | {} |", cells.join(" | "));
}

fn main() {
    let open = [0x42u8; 32];
    for dim in [576usize, 896] {
        for top_k in [16u32, 32] {
            let model = SyntheticModel::new(dim, 1);
            let other_model = SyntheticModel::new(dim, 2);
            let coeffs = coefficients(&open, dim as u32);
            let params = SketchParams { top_k };
            let mut rng = SplitMix64::new(7);
            let mut honest = [Vec::new(), Vec::new(), Vec::new()];
            let (mut wrong_row, mut wrong_model, mut zero, mut constant) =
                (vec![], vec![], vec![], vec![]);
            let mut sketches = Vec::with_capacity(ROWS);
            for _ in 0..ROWS {
                let row = model.hidden_state(&mut rng);
                let s = sketch(&row, &coeffs, &params).unwrap();
                sketches.push(s);
                for (slot, relative) in honest.iter_mut().zip([1e-5, 1e-3, 1e-2]) {
                    let drifted = perturb(&row, relative, &mut rng);
                    slot.push(sketch_distance(
                        s,
                        sketch(&drifted, &coeffs, &params).unwrap(),
                    ));
                }
                let other = model.hidden_state(&mut rng);
                wrong_row.push(sketch_distance(
                    s,
                    sketch(&other, &coeffs, &params).unwrap(),
                ));
                let foreign = other_model.hidden_state(&mut rng);
                wrong_model.push(sketch_distance(
                    s,
                    sketch(&foreign, &coeffs, &params).unwrap(),
                ));
                zero.push(sketch_distance(s, 0));
            }
            // The best constant a cheater can send: the most common sketch value of this model.
            let mut sorted: Vec<i64> = sketches
                .iter()
                .map(|&s| {
                    if s > 1 << 30 {
                        i64::from(s) - 2_147_483_647
                    } else {
                        i64::from(s)
                    }
                })
                .collect();
            sorted.sort_unstable();
            let median = sorted[sorted.len() / 2];
            let guess = median.rem_euclid(2_147_483_647) as u32;
            constant.extend(sketches.iter().map(|&s| sketch_distance(s, guess)));

            println!("\n### d = {dim}, top_k = {top_k} ({ROWS} rows)\n");
            let header: Vec<String> = TOLERANCES.iter().map(|t| format!("τ={t:>5}")).collect();
            println!(
                "| per-position pass rate              | {} |",
                header.join(" | ")
            );
            println!("|{}|", vec!["---"; TOLERANCES.len() + 1].join("|"));
            print_row("honest, 1e-5 relative noise", &honest[0]);
            print_row("honest, 1e-3 relative noise", &honest[1]);
            print_row("honest, 1e-2 relative noise", &honest[2]);
            print_row("wrong row, same model", &wrong_row);
            print_row("wrong model", &wrong_model);
            print_row("all-zero sketch", &zero);
            print_row("best constant (median sketch)", &constant);
            let max_honest: Vec<String> = honest
                .iter()
                .map(|h| h.iter().max().copied().unwrap_or(0).to_string())
                .collect();
            println!(
                "\nmax honest distance at 1e-5 / 1e-3 / 1e-2 relative noise: {}",
                max_honest.join(" / ")
            );
            println!();
            println!(
                "| per-rollout (K=32, ≤1 failure)      | {} |",
                header.join(" | ")
            );
            println!("|{}|", vec!["---"; TOLERANCES.len() + 1].join("|"));
            for (label, d) in [
                ("honest 1e-2: false REJECT", &honest[2]),
                ("wrong row: false ACCEPT", &wrong_row),
                ("all-zero: false ACCEPT", &zero),
                ("best constant: false ACCEPT", &constant),
            ] {
                let cells: Vec<String> = pass_rates(d)
                    .iter()
                    .map(|&q| {
                        let p = rollout_pass(q, 32, 1);
                        format!(
                            "{:>9.2e}",
                            if label.contains("REJECT") { 1.0 - p } else { p }
                        )
                    })
                    .collect();
                println!("| {label:<34} | {} |", cells.join(" | "));
            }
        }
    }
}

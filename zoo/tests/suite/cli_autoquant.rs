//! `anneal quantize --auto --out plan.json`, then `anneal quantize --config
//! plan.json` reproduces the same quantised model; bad plans and arguments
//! give one clear line.

use crate::common::{anneal, fresh_dir};
use std::path::PathBuf;

use anneal_quant::QuantConfig;

fn tmp(name: &str) -> PathBuf {
    let d = fresh_dir("autoq", name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Size, accuracy and loss cells of the table row whose weights cell starts with `label`.
fn row_cells(stdout: &str, label: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("| small-cnn | {label}")))
        .unwrap_or_else(|| panic!("no {label} row in\n{stdout}"));
    line.split('|')
        .map(|c| c.trim().to_string())
        .skip(3)
        .take(3)
        .collect()
}

#[test]
fn auto_then_config_reproduces_the_plan() {
    let dir = tmp("plan");
    let d = dir.to_str().unwrap();
    let (ok, _, stderr) = anneal(&["train", "--epochs", "2", "--out", d]);
    assert!(ok, "{stderr}");
    let w = dir.join("model.safetensors");
    let w = w.to_str().unwrap();
    let plan = dir.join("plan.json");
    let p = plan.to_str().unwrap();

    let (ok, stdout, stderr) = anneal(&[
        "quantize",
        "--weights",
        w,
        "--auto",
        "--criterion",
        "abs:0.005",
        "--budget",
        "30",
        "--out",
        p,
    ]);
    assert!(ok, "{stderr}");
    for needle in [
        "criterion absolute drop ≤ 0.005",
        "chosen plan:",
        "| layer | scheme | calibration |",
        "| trial | phase |",
        "images/s",
        "plan: ",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing in\n{stdout}");
    }
    let auto_row = row_cells(&stdout, "auto (");
    let text = std::fs::read_to_string(&plan).unwrap();
    let config = QuantConfig::from_json(&text, p).unwrap();
    assert_eq!(config.overrides.len(), 3, "{text}");

    let (ok, stdout, stderr) = anneal(&["quantize", "--weights", w, "--config", p]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("SQNR") && stdout.contains("| features.0 |"),
        "{stdout}"
    );
    // Same size, accuracy and loss as the plan the tuner chose.
    assert_eq!(row_cells(&stdout, "plan ("), auto_row);

    // A plan naming a layer the model lacks, and a corrupt plan.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, text.replace("features.4", "features.9")).unwrap();
    let (ok, _, stderr) = anneal(&[
        "quantize",
        "--weights",
        w,
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("bad.json") && stderr.contains("unknown layer \"features.9\""),
        "{stderr}"
    );
    std::fs::write(
        &bad,
        text.replace("\"int8\"", "\"int7\"")
            .replace("\"int4_weight_only\"", "\"int7\""),
    )
    .unwrap();
    let (ok, _, stderr) = anneal(&[
        "quantize",
        "--weights",
        w,
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("bad.json") && stderr.contains("unknown scheme \"int7\""),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_auto_arguments_give_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "quantize",
                "--weights",
                "/nonexistent/w",
                "--auto",
                "--criterion",
                "pct:1",
            ],
            "--criterion",
        ),
        (
            &[
                "quantize",
                "--weights",
                "/nonexistent/w",
                "--auto",
                "--budget",
                "0",
            ],
            "--budget",
        ),
        (
            &["quantize", "--weights", "/nonexistent/w", "--out", "x.json"],
            "--auto",
        ),
        (
            &[
                "quantize",
                "--weights",
                "/nonexistent/w",
                "--auto",
                "--bits",
                "4",
            ],
            "cannot be used with",
        ),
        (
            &[
                "quantize",
                "--weights",
                "/nonexistent/w",
                "--auto",
                "--config",
                "x.json",
            ],
            "cannot be used with",
        ),
        (
            &[
                "quantize",
                "--weights",
                "/nonexistent/w",
                "--auto",
                "--objective",
                "tiny",
            ],
            "invalid value",
        ),
        (
            &["quantize", "--weights", "/nonexistent/w", "--auto"],
            "/nonexistent/w",
        ),
    ];
    for (args, needle) in cases {
        let (ok, _, stderr) = anneal(args);
        assert!(!ok, "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

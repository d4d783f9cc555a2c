//! The `anneal` command line: every subcommand, and bad arguments that must
//! give one clear line and a non-zero exit, never a backtrace.

use crate::common::{anneal, fresh_dir};
use std::path::PathBuf;
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    fresh_dir("cli", name)
}

#[test]
fn train_eval_quantize_round_trip() {
    let out = tmp("train");
    let o = out.to_str().unwrap();
    let (ok, stdout, stderr) = anneal(&["train", "--epochs", "2", "--out", o]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| small-cnn | f32 |")
            && stdout.contains("int8")
            && stdout.contains("int4"),
        "{stdout}"
    );
    assert!(
        out.join("model.safetensors").exists()
            && out.join("curves.svg").exists()
            && out.join("curves.png").exists()
    );
    let w = out.join("model.safetensors");
    let (ok, stdout, stderr) = anneal(&["eval", "--weights", w.to_str().unwrap()]);
    assert!(ok && stdout.contains("test accuracy"), "{stderr}");
    for method in ["minmax", "percentile", "mse", "entropy", "meanstd"] {
        let (ok, stdout, stderr) = anneal(&[
            "quantize",
            "--weights",
            w.to_str().unwrap(),
            "--method",
            method,
            "--per-channel",
        ]);
        assert!(ok && stdout.contains("SQNR"), "{method}: {stderr}");
    }
    let (ok, stdout, stderr) =
        anneal(&["quantize", "--weights", w.to_str().unwrap(), "--bits", "4"]);
    assert!(ok && stdout.contains("int4"), "{stderr}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn compare_prints_one_table() {
    let out = tmp("compare");
    let (ok, stdout, stderr) = anneal(&[
        "compare",
        "--what",
        "regularizers",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| regulariser |") && stdout.contains("dropout 0.3"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn help_for_every_command() {
    for cmd in [
        vec!["--help"],
        vec!["train", "--help"],
        vec!["eval", "--help"],
        vec!["quantize", "--help"],
        vec!["compare", "--help"],
        vec!["bench", "--help"],
    ] {
        let (ok, stdout, _) = anneal(&cmd);
        assert!(ok && stdout.contains("Usage"), "{cmd:?}");
    }
}

#[test]
fn bad_arguments_give_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["train", "--model", "resnet"], "unknown model"),
        (&["train", "--lr", "-1"], "--lr"),
        (&["train", "--epochs", "0"], "--epochs"),
        (&["train", "--dropout", "1.5"], "--dropout"),
        (&["train", "--optimizer", "lbfgs"], "invalid value"),
        (
            &["eval", "--weights", "/nonexistent/model.safetensors"],
            "/nonexistent/model.safetensors",
        ),
        (
            &["quantize", "--weights", "/nonexistent/x", "--bits", "3"],
            "--bits",
        ),
        (&["train", "--batch-size", "abc"], "invalid value"),
        (&["frobnicate"], "unrecognized subcommand"),
        (&["bench", "--threads", "0"], "--threads"),
    ];
    for (args, needle) in cases {
        let (ok, _, stderr) = anneal(args);
        assert!(!ok, "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
    }
    // A corrupt weights file is an error naming the file.
    let dir = tmp("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.safetensors");
    std::fs::write(&f, b"not a safetensors file").unwrap();
    let (ok, _, stderr) = anneal(&["eval", "--weights", f.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("bad.safetensors") && stderr.lines().count() == 1,
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every subcommand given a missing file, an unreadable file (a folder), a
/// corrupt or mismatched file, a wrong model name or an out-of-range number
/// prints exactly one line on standard error, naming what is wrong, and
/// exits non-zero — never a panic, a backtrace or clap's multi-line usage.
#[test]
fn every_subcommand_answers_bad_input_with_one_line() {
    let dir = tmp("bad-input");
    std::fs::create_dir_all(dir.join("a-folder")).unwrap();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(dir.join("corrupt.safetensors"), b"not a safetensors file").unwrap();
    std::fs::write(dir.join("bad.json"), b"{\"lr\": ").unwrap();
    std::fs::write(dir.join("plain-file"), b"x").unwrap();
    // Valid small-cnn weights (untrained) for the mismatch cases.
    let m = anneal_zoo::registry::build_model("small-cnn", None, 0).unwrap();
    anneal_layers::save_safetensors(m.as_ref(), dir.join("small.safetensors")).unwrap();
    let (missing, folder, corrupt, bad_json, small, file) = (
        p("missing.safetensors"),
        p("a-folder"),
        p("corrupt.safetensors"),
        p("bad.json"),
        p("small.safetensors"),
        p("plain-file"),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // No or an unknown subcommand, an unknown flag.
        (vec![], "subcommand"),
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec!["train", "--frob"], "unexpected argument"),
        // train: names and numbers out of range.
        (vec!["train", "--model", "resnet"], "unknown model"),
        (vec!["train", "--lr", "-1"], "--lr"),
        (vec!["train", "--lr", "nan"], "--lr"),
        (vec!["train", "--lr", "inf"], "--lr"),
        (vec!["train", "--lr", "1e400"], "--lr"),
        (vec!["train", "--epochs", "0"], "--epochs"),
        (vec!["train", "--epochs", "100000"], "--epochs"),
        (
            vec!["train", "--epochs", "99999999999999999999999"],
            "--epochs",
        ),
        (vec!["train", "--batch-size", "0"], "--batch-size"),
        (vec!["train", "--batch-size", "1e9"], "--batch-size"),
        (vec!["train", "--dropout", "1.5"], "--dropout"),
        (vec!["train", "--dropout", "NaN"], "--dropout"),
        (vec!["train", "--l2", "-0.1"], "--l2"),
        (vec!["train", "--l2", "inf"], "--l2"),
        (vec!["train", "--seed", "-1"], "-1"),
        (vec!["train", "--optimizer", "lbfgs"], "lbfgs"),
        (vec!["train", "--schedule", "sometimes"], "sometimes"),
        // train: settings files.
        (vec!["train", "--config", &missing], "missing.safetensors"),
        (vec!["train", "--config", &folder], "a-folder"),
        (vec!["train", "--config", &bad_json], "bad.json"),
        // train: an output folder that is a file.
        (vec!["train", "--epochs", "1", "--out", &file], "plain-file"),
        // eval.
        (vec!["eval"], "--weights"),
        (vec!["eval", "--weights", &missing], "missing.safetensors"),
        (vec!["eval", "--weights", &folder], "a-folder"),
        (vec!["eval", "--weights", &corrupt], "corrupt.safetensors"),
        (
            vec!["eval", "--model", "lstm", "--weights", &small],
            "small.safetensors",
        ),
        (
            vec!["eval", "--model", "resnet", "--weights", &small],
            "unknown model",
        ),
        // quantize.
        (
            vec!["quantize", "--weights", &missing],
            "missing.safetensors",
        ),
        (vec!["quantize", "--weights", &folder], "a-folder"),
        (
            vec!["quantize", "--weights", &corrupt],
            "corrupt.safetensors",
        ),
        (
            vec!["quantize", "--weights", &small, "--bits", "3"],
            "--bits",
        ),
        (
            vec!["quantize", "--weights", &small, "--bits", "99999999999"],
            "--bits",
        ),
        (
            vec!["quantize", "--weights", &small, "--method", "magic"],
            "magic",
        ),
        (
            vec!["quantize", "--weights", &small, "--model", "gru"],
            "small.safetensors",
        ),
        (
            vec!["quantize", "--weights", &small, "--config", &missing],
            "missing.safetensors",
        ),
        (
            vec!["quantize", "--weights", &small, "--config", &folder],
            "a-folder",
        ),
        (
            vec!["quantize", "--weights", &small, "--config", &bad_json],
            "bad.json",
        ),
        (
            vec![
                "quantize",
                "--weights",
                &small,
                "--auto",
                "--criterion",
                "abs:-1",
            ],
            "criterion",
        ),
        (
            vec!["quantize", "--weights", &small, "--auto", "--bits", "4"],
            "--bits",
        ),
        // compare.
        (vec!["compare", "--what", "everything"], "everything"),
        (vec!["compare", "--epochs", "0"], "--epochs"),
        (vec!["compare", "--model", "resnet"], "unknown model"),
        // bench.
        (vec!["bench", "--threads", "0"], "--threads"),
        (vec!["bench", "--threads", "257"], "--threads"),
        (vec!["bench", "--threads", "x"], "--threads"),
        // tune.
        (vec!["tune", "--model", "resnet"], "unknown model"),
        (vec!["tune", "--configs", "0"], "configurations"),
        (vec!["tune", "--min-epochs", "0"], "epochs"),
        (vec!["tune", "--batch-size", "0"], "batch"),
    ];
    let mut failures = Vec::new();
    for (args, needle) in &cases {
        let out = Command::new(env!("CARGO_BIN_EXE_anneal"))
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run anneal");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let fine = !out.status.success()
            && out.status.code().is_some()
            && lines.len() == 1
            && lines[0].starts_with("anneal: error: ")
            && lines[0].contains(needle)
            && !stderr.contains("panicked")
            && !stderr.contains("backtrace");
        if !fine {
            failures.push(format!(
                "{args:?} (exit {:?}, want one line with {needle:?}):\n{stderr}",
                out.status.code()
            ));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

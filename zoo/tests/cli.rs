//! The `anneal` command line: every subcommand, and bad arguments that must
//! give one clear line and a non-zero exit, never a backtrace.

use std::path::PathBuf;
use std::process::Command;

fn anneal(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anneal"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run anneal");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("anneal-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
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

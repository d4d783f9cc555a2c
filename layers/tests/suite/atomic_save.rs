//! Saving is atomic: a write interrupted by an error, a panic or a killed
//! process leaves the previous checkpoint intact and loadable under its
//! name, and never a partial file there.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anneal_layers::{
    load_safetensors, save_safetensors, state_dict, to_safetensors_bytes, write_atomically_with,
    LinearConfig, Sequential,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Linear(64 → 64) → Linear(64 → 8) from `seed`: about 17 KiB on disk.
fn model(seed: u64) -> Sequential<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .push(LinearConfig::new(64, 64).init::<f32>(&mut rng).unwrap())
        .push(LinearConfig::new(64, 8).init::<f32>(&mut rng).unwrap())
}

fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("atomic_save-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The file at `path` loads strictly and equals the model saved from `seed`.
fn holds_model(path: &Path, seed: u64) {
    let mut m = model(999);
    load_safetensors(&mut m, path, true).unwrap();
    assert!(state_dict(&m) == state_dict(&model(seed)));
}

#[test]
fn a_writer_failing_midway_leaves_the_previous_checkpoint() {
    let dir = scratch("failing");
    let path = dir.join("ckpt.safetensors");
    save_safetensors(&model(1), &path).unwrap();
    let new = to_safetensors_bytes(&model(2)).unwrap();
    let err = write_atomically_with(&path, |f| {
        f.write_all(&new[..new.len() / 2])?;
        Err(std::io::Error::other("disk full (injected)"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    holds_model(&path, 1);
    assert_eq!(listing(&dir), ["ckpt.safetensors"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_writer_panicking_midway_leaves_the_previous_checkpoint() {
    let dir = scratch("panicking");
    let path = dir.join("ckpt.safetensors");
    save_safetensors(&model(3), &path).unwrap();
    let new = to_safetensors_bytes(&model(4)).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        write_atomically_with(&path, |f| {
            f.write_all(&new[..new.len() / 3])?;
            panic!("interrupted mid-write");
        })
    }));
    assert!(r.is_err());
    holds_model(&path, 3);
    assert_eq!(listing(&dir), ["ckpt.safetensors"]);
    // The next save goes through.
    save_safetensors(&model(4), &path).unwrap();
    holds_model(&path, 4);
    let _ = std::fs::remove_dir_all(&dir);
}

const CHILD_DIR: &str = "ANNEAL_ATOMIC_SAVE_CHILD_DIR";

/// Run only as the child of `a_process_killed_mid_write_…`: saves model 5,
/// then starts saving model 6, writes half of it, says so through a marker
/// file and waits to be killed.
#[test]
fn child_process_that_is_killed_mid_write() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let path = dir.join("ckpt.safetensors");
    save_safetensors(&model(5), &path).unwrap();
    let new = to_safetensors_bytes(&model(6)).unwrap();
    let _ = write_atomically_with(&path, |f| {
        f.write_all(&new[..new.len() / 2])?;
        f.sync_all()?;
        std::fs::write(dir.join("halfway"), b"")?;
        std::thread::sleep(Duration::from_secs(120));
        f.write_all(&new[new.len() / 2..])
    });
}

#[test]
fn a_process_killed_mid_write_leaves_the_previous_checkpoint() {
    let dir = scratch("killed");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "atomic_save::child_process_that_is_killed_mid_write",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dir.join("halfway").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the child never got halfway"
        );
        assert!(child.try_wait().unwrap().is_none(), "the child exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup runs.
    child.wait().unwrap();

    let path = dir.join("ckpt.safetensors");
    holds_model(&path, 5);
    // Only the hidden temporary, holding the half-written bytes, is left.
    let names = listing(&dir);
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[1..], ["ckpt.safetensors", "halfway"]);
    assert!(names[0].starts_with(".ckpt.safetensors.tmp-"), "{names:?}");
    let half = to_safetensors_bytes(&model(6)).unwrap().len() / 2;
    assert_eq!(
        std::fs::metadata(dir.join(&names[0])).unwrap().len(),
        half as u64
    );
    // A later save is not blocked by the stale temporary.
    save_safetensors(&model(6), &path).unwrap();
    holds_model(&path, 6);
    let _ = std::fs::remove_dir_all(&dir);
}

//! Kill and resume: `conv_net` SIGKILLed at a random moment after its first
//! checkpoint and resumed with `--load` ends with the same `final_loss`, bit for
//! bit, as an uninterrupted run; a temporary file left by a save that was killed
//! mid-write breaks neither loading nor the next saves.
//!
//! The runs take tens of seconds in a release build, so the test runs only there
//! (`cargo test --release`); it builds the example with the same cargo if needed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use adgraph::checkpoint::Checkpoint;

/// Steps of every run, and the checkpoint interval.
const STEPS: usize = 120;
const SAVE_EVERY: usize = 20;

/// The `conv_net` binary beside this test's (target/release/examples), built
/// first so it is current.
fn conv_net() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--example", "conv_net"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cannot run cargo to build conv_net");
    assert!(status.success(), "building conv_net failed");
    // This test runs as target/release/deps/resume-<hash>.
    let exe = std::env::current_exe().unwrap();
    let release = exe.parent().and_then(Path::parent).unwrap();
    let bin = release
        .join("examples")
        .join(format!("conv_net{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "no conv_net at {}", bin.display());
    bin
}

/// A fresh, empty folder for one run.
fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adgraph-resume-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts conv_net with the test's flags, saving to `dir/ck.safetensors`.
fn start(bin: &Path, dir: &Path, load: Option<&Path>) -> Child {
    let mut cmd = Command::new(bin);
    cmd.args(["--steps", &STEPS.to_string(), "--seed", "7"])
        .args(["--save-every", &SAVE_EVERY.to_string()])
        .arg("--save")
        .arg(dir.join("ck.safetensors"))
        .arg("--out")
        .arg(dir);
    if let Some(path) = load {
        cmd.arg("--load").arg(path);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start conv_net")
}

/// Waits for a run to finish successfully; returns its stdout.
fn finish(mut child: Child) -> String {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "conv_net failed: {status}\n{out}");
    out
}

/// The value of the `key=` line of a run's output.
fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{out}"))
}

/// The step a checkpoint was saved at.
fn saved_step(path: &Path) -> usize {
    Checkpoint::load(path).unwrap().metadata["step"]
        .parse()
        .unwrap()
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "runs conv_net for tens of seconds: release only"
)]
fn killed_run_resumed_from_its_checkpoint_ends_bitwise_equal() {
    let bin = conv_net();

    // The uninterrupted run; its times bound where the kill may fall.
    let straight = fresh_dir("straight");
    let t0 = Instant::now();
    let child = start(&bin, &straight, None);
    let ckpt = straight.join("ck.safetensors");
    while !ckpt.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let first_save = t0.elapsed();
    let out = finish(child);
    let total = t0.elapsed();
    let final_loss = value(&out, "final_loss").to_string();
    assert_eq!(saved_step(&ckpt), STEPS);

    // The killed run: SIGKILL at a random moment in the first half of what
    // remains after its first save (the delay is printed, to replay a failure).
    let killed = fresh_dir("killed");
    let ckpt = killed.join("ck.safetensors");
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let delay = (total - first_save).mul_f64(0.5 * f64::from(nanos % 1000) / 1000.0);
    println!("uninterrupted: first save after {first_save:?}, end after {total:?}; kill {delay:?} after the first save");
    let mut child = start(&bin, &killed, None);
    while !ckpt.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "conv_net ended before the kill; the delay was too long"
    );
    let step = saved_step(&ckpt);
    println!("killed: last checkpoint at step {step}");
    assert!(
        step.is_multiple_of(SAVE_EVERY) && step < STEPS,
        "step {step}"
    );

    // A save killed mid-write leaves a partial temporary file beside the
    // checkpoint; make one (as the next save, under another process id, would name it).
    let partial = std::fs::read(&ckpt).unwrap();
    let leftover = killed.join(".ck.safetensors.999999.0.tmp");
    std::fs::write(&leftover, &partial[..partial.len() / 2]).unwrap();

    // Resume: same flags plus --load; it saves over the file it loaded.
    let out = finish(start(&bin, &killed, Some(&ckpt)));
    assert!(
        out.contains(&format!("at step {step}")),
        "did not resume at step {step}:\n{out}"
    );
    let resumed_loss = value(&out, "final_loss");
    println!("final_loss uninterrupted={final_loss} resumed={resumed_loss}");
    let bits = |s: &str| s.parse::<f32>().unwrap().to_bits();
    assert_eq!(bits(resumed_loss), bits(&final_loss));
    assert_eq!(saved_step(&ckpt), STEPS);
    assert!(leftover.exists());

    for dir in [straight, killed] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

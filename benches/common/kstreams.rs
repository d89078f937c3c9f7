//! The Kafka Streams peer of benches/kafka.rs: builds benches/kstreams/ with Maven once
//! (into `target/kstreams/`, rebuilt only when the pom or the source is newer than the
//! last build) and runs its passthrough as a child JVM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The compiled classes and the runtime jars of the Kafka Streams app.
pub struct Build {
    classes: PathBuf,
    lib: PathBuf,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn works(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Builds the app (cached), or says why it cannot: no `java`, no `mvn`, a failed build.
pub fn build() -> Result<Build, String> {
    if !works("java", "-version") {
        return Err("`java` (17+) is not on PATH".into());
    }
    let project = Path::new(ROOT).join("benches/kstreams");
    let out = Path::new(ROOT).join("target/kstreams");
    let stamp = out.join(".built");
    let sources = [project.join("pom.xml"), project.join("src/main/java/dev/weir/bench/Passthrough.java")];
    let newest = sources.iter().filter_map(|p| modified(p)).max();
    let fresh = match (modified(&stamp), newest) {
        (Some(built), Some(src)) => built >= src,
        _ => false,
    };
    if !fresh {
        if !works("mvn", "-v") {
            return Err("`mvn` (Maven 3) is not on PATH".into());
        }
        println!("  building benches/kstreams with Maven (once; jars from Maven Central)…");
        let output = Command::new("mvn")
            .args(["-q", "-B", "-f"])
            .arg(project.join("pom.xml"))
            .args(["compile", "dependency:copy-dependencies"])
            .output()
            .map_err(|e| format!("mvn: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mvn failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        std::fs::write(&stamp, b"").map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    Ok(Build { classes: out.join("classes"), lib: out.join("lib") })
}

/// A running Kafka Streams passthrough; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Streams {
    child: Option<Child>,
}

impl Build {
    /// Starts the passthrough `input` → `output` as application `app_id` with `threads`
    /// stream threads, and waits until it reports RUNNING (its group joined).
    pub fn start(&self, brokers: &str, input: &str, output: &str, app_id: &str, threads: u32) -> Result<Streams, String> {
        let cp = format!("{}:{}/*", self.classes.display(), self.lib.display());
        let mut child = Command::new("java")
            .args(["-Xms512m", "-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", &cp])
            .arg("dev.weir.bench.Passthrough")
            .args([brokers, input, output, app_id, &threads.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("java: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "RUNNING" {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let mut s = Streams { child: Some(child) };
        if rx.recv_timeout(Duration::from_secs(90)).is_err() {
            s.stop();
            return Err("kafka streams did not reach RUNNING within 90 s".into());
        }
        Ok(s)
    }
}

impl Streams {
    /// SIGTERM (Kafka Streams closes and commits), SIGKILL after 40 s.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.stop();
    }
}

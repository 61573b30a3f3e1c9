//! Service binaries run as child processes, as a supervisor with a restart policy would
//! run them: for the chaos harness and the benchmarks.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// The service processes, as a supervisor with a restart policy would run them.
#[derive(Default)]
pub struct Procs {
    procs: BTreeMap<&'static str, Proc>,
    /// Services that exited on their own and were restarted.
    pub unexpected_exits: u32,
}

struct Proc {
    program: PathBuf,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Deliberately down (killed and not yet restarted).
    held: bool,
}

impl Proc {
    /// The program with exactly its settings, its output appended to its log.
    fn command(&self) -> anyhow::Result<Command> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&self.program);
        command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(command)
    }
}

impl Procs {
    pub fn add(
        &mut self,
        name: &'static str,
        bin_dir: &Path,
        run_dir: &Path,
        common: &[(&'static str, String)],
        own: &[(&'static str, String)],
    ) -> anyhow::Result<()> {
        let program = bin_dir.join(name);
        if !program.exists() {
            bail!(
                "{} not found: build the binaries first (scripts/chaos does)",
                program.display()
            );
        }
        let env = common.iter().chain(own).cloned().collect();
        self.procs.insert(
            name,
            Proc {
                program,
                env,
                log: run_dir.join(format!("{name}.log")),
                child: None,
                held: false,
            },
        );
        Ok(())
    }

    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let proc = self.procs.get_mut(name).context("unknown service")?;
        let child = proc
            .command()?
            .spawn()
            .with_context(|| format!("starting {}", proc.program.display()))?;
        proc.child = Some(child);
        proc.held = false;
        Ok(())
    }

    /// Runs a service's program once with `args` and the service's settings (e.g.
    /// `loader migrate`), waits for it, and fails naming its log unless it succeeded.
    pub fn run_once(&self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let proc = self.procs.get(name).context("unknown service")?;
        let what = format!("{name} {}", args.join(" "));
        let status = proc
            .command()?
            .args(args)
            .status()
            .with_context(|| format!("running {what}"))?;
        if !status.success() {
            bail!(
                "{what} failed ({status}); its output is in {}",
                proc.log.display()
            );
        }
        Ok(())
    }

    /// The process id of a running service (for its CPU time in `/proc`).
    pub fn pid(&self, name: &str) -> Option<u32> {
        Some(self.procs.get(name)?.child.as_ref()?.id())
    }

    /// SIGKILL, and hold the service down until `start`.
    pub fn kill(&mut self, name: &str) {
        if let Some(proc) = self.procs.get_mut(name) {
            proc.held = true;
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Restarts services that exited on their own (not held down); returns their names.
    pub fn restart_exited(&mut self) -> Vec<&'static str> {
        let mut restarted = Vec::new();
        let names: Vec<&'static str> = self.procs.keys().copied().collect();
        for name in names {
            let proc = self.procs.get_mut(name).unwrap();
            let exited = !proc.held
                && proc
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.unexpected_exits += 1;
                restarted.push(name);
                let _ = self.start(name);
            }
        }
        restarted
    }

    pub fn stop_all(&mut self) {
        for proc in self.procs.values_mut() {
            if let Some(mut child) = proc.child.take() {
                // SIGTERM for a graceful stop, then wait.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let _ = child.wait();
            }
        }
    }
}

/// Services still running when their supervisor goes (an error cut a run short) are
/// killed, so that no process outlives the harness that started it.
impl Drop for Procs {
    fn drop(&mut self) {
        for proc in self.procs.values_mut() {
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

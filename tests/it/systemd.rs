//! The systemd packaging seen from outside: what `systemd/install.sh` puts in
//! a staging tree and takes out again, how `systemd-analyze` judges the unit,
//! and whether the example settings file still matches the daemon's flags.
//!
//! The installer is run with `DESTDIR` set to a temporary directory, so these
//! tests never touch the machine's own systemd. The one exception checks that
//! root without sudo refuses to build before changing anything; there `cargo`
//! and `systemctl` are stubs and the "build" fails, so even a regression
//! stops before installing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

/// The daemon built for these tests; the installer is given it as the binary.
const BINARY: &str = env!("CARGO_BIN_EXE_punctual");

/// Highest `systemd-analyze security` exposure the unit may have ("OK" band).
const MAX_EXPOSURE: f64 = 2.0;

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

fn shipped(name: &str) -> String {
    let path = systemd_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A directory under the system temp dir, removed again on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        TempDir::under(&std::env::temp_dir(), label)
    }

    /// A fresh directory inside `parent`.
    fn under(parent: &Path, label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "punctual-systemd-{label}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = parent.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs the installer with `DESTDIR=destdir`, installing [`BINARY`] unless
/// told to uninstall. Panics with its output when it fails.
fn install(destdir: &Path, args: &[&str]) -> String {
    let mut command = Command::new(systemd_dir().join("install.sh"));
    if !args.contains(&"--uninstall") {
        command.args(["--no-build", "--binary", BINARY]);
    }
    let output = command
        .args(args)
        .env("DESTDIR", destdir)
        .output()
        .expect("run systemd/install.sh");
    assert!(
        output.status.success(),
        "install.sh {args:?} failed: {}",
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every file below `root`: permission bits, size, inode and modification
/// time, so that comparing two snapshots shows whether anything was rewritten
/// or replaced.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, u64, u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display())) {
            let path = entry.expect("read a directory entry").path();
            let meta = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            if meta.is_dir() {
                pending.push(path);
            } else {
                let modified = meta
                    .modified()
                    .expect("file systems here record modification times");
                let relative = path
                    .strip_prefix(root)
                    .expect("walked below the root")
                    .to_path_buf();
                files.insert(
                    relative,
                    (
                        meta.permissions().mode() & 0o7777,
                        meta.len(),
                        meta.ino(),
                        modified,
                    ),
                );
            }
        }
    }
    files
}

fn mode(path: &Path) -> u32 {
    let meta =
        fs::metadata(path).unwrap_or_else(|e| panic!("{} should exist: {e}", path.display()));
    meta.permissions().mode() & 0o7777
}

struct Staged {
    binary: PathBuf,
    unit: PathBuf,
    settings: PathBuf,
}

fn staged(destdir: &Path, prefix: &str) -> Staged {
    Staged {
        binary: destdir
            .join(prefix.trim_start_matches('/'))
            .join("bin/punctual"),
        unit: destdir.join("etc/systemd/system/punctual.service"),
        settings: destdir.join("etc/default/punctual"),
    }
}

#[test]
fn install_into_destdir_is_idempotent_and_keeps_operator_settings() {
    let dest = TempDir::new("install");
    let out = install(dest.path(), &[]);
    let files = staged(dest.path(), "/usr/local");

    let installed = fs::read(&files.binary).expect("the binary is installed under /usr/local/bin");
    assert!(
        installed == fs::read(BINARY).expect("read the built binary"),
        "installed binary differs"
    );
    assert_eq!(mode(&files.binary), 0o755, "the binary must be executable");
    let unit = fs::read_to_string(&files.unit).expect("the unit is installed");
    assert_eq!(
        unit,
        shipped("punctual.service"),
        "with the default prefix the unit is installed as shipped"
    );
    assert!(
        unit.contains("\nExecStart=/usr/local/bin/punctual\n"),
        "{unit}"
    );
    assert_eq!(mode(&files.unit), 0o644);
    let settings = fs::read_to_string(&files.settings).expect("the example settings are installed");
    assert_eq!(settings, shipped("punctual.env"));
    assert_eq!(
        mode(&files.settings),
        0o600,
        "settings may hold a token: root only"
    );
    assert!(out.contains("systemctl enable --now punctual"), "{out}");
    assert!(out.contains("journalctl -fu punctual"), "{out}");

    let before = snapshot(dest.path());
    install(dest.path(), &[]);
    assert_eq!(
        snapshot(dest.path()),
        before,
        "a second install must leave every file alone"
    );

    let local = format!("{settings}PUNCTUAL_RATE=5\nPUNCTUAL_LISTEN=0.0.0.0:9000\n");
    fs::write(&files.settings, &local).expect("edit the settings as an operator would");
    let out = install(dest.path(), &[]);
    assert_eq!(
        fs::read_to_string(&files.settings).expect("settings still there"),
        local,
        "an install must never overwrite the operator's settings"
    );
    assert!(
        out.contains("kept"),
        "the installer says it kept the settings: {out}"
    );

    let out = install(dest.path(), &["--uninstall"]);
    assert!(!files.binary.exists(), "uninstall removes the binary");
    assert!(!files.unit.exists(), "uninstall removes the unit");
    assert_eq!(
        fs::read_to_string(&files.settings).expect("modified settings survive uninstall"),
        local
    );
    assert!(
        out.contains("kept"),
        "the uninstaller says it kept the settings: {out}"
    );
}

#[test]
fn uninstall_removes_untouched_example_settings_and_can_run_twice() {
    let dest = TempDir::new("uninstall");
    install(dest.path(), &[]);
    let files = staged(dest.path(), "/usr/local");
    assert!(
        files.settings.exists(),
        "the example settings are installed"
    );

    install(dest.path(), &["--uninstall"]);
    for path in [&files.binary, &files.unit, &files.settings] {
        assert!(!path.exists(), "{} should be gone", path.display());
    }
    install(dest.path(), &["--uninstall"]);
}

#[test]
fn a_custom_prefix_moves_the_binary_and_points_exec_start_at_it() {
    let dest = TempDir::new("prefix");
    install(dest.path(), &["--prefix", "/opt/punctual/"]);
    let files = staged(dest.path(), "/opt/punctual");

    assert_eq!(mode(&files.binary), 0o755, "binary under the prefix");
    assert!(
        !staged(dest.path(), "/usr/local").binary.exists(),
        "nothing under /usr/local"
    );
    let unit = fs::read_to_string(&files.unit).expect("the unit is installed");
    let exec_starts: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(exec_starts, ["ExecStart=/opt/punctual/bin/punctual"]);
    let rest = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with("ExecStart="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        rest(&unit),
        rest(&shipped("punctual.service")),
        "only ExecStart= changes"
    );

    install(dest.path(), &["--prefix", "/opt/punctual", "--uninstall"]);
    assert!(
        !files.binary.exists() && !files.unit.exists(),
        "uninstall with the same prefix removes both"
    );
}

#[test]
fn installer_explains_itself_and_refuses_what_it_does_not_understand() {
    let script = systemd_dir().join("install.sh");
    let help = Command::new(&script)
        .arg("--help")
        .output()
        .expect("run install.sh --help");
    assert!(help.status.success(), "{}", describe(&help));
    let text = String::from_utf8_lossy(&help.stdout);
    for word in [
        "Usage:",
        "--prefix",
        "--no-build",
        "--binary",
        "--uninstall",
        "DESTDIR",
    ] {
        assert!(text.contains(word), "--help should mention {word}: {text}");
    }

    let dest = TempDir::new("refuse");
    for args in [
        &["--frobnicate"][..],
        &["--prefix", "relative/path"],
        &["--prefix", "/has space"],
    ] {
        let output = Command::new(&script)
            .args(args)
            .env("DESTDIR", dest.path())
            .output()
            .expect("run install.sh");
        assert!(
            !output.status.success(),
            "{args:?} must be refused: {}",
            describe(&output)
        );
        assert!(!output.stderr.is_empty(), "{args:?} must say why");
    }
    assert!(
        snapshot(dest.path()).is_empty(),
        "a refused run installs nothing"
    );
}

/// `systemd-analyze`, or `None` (after saying so) when it is not installed.
/// Under CI its absence is a failure: the check must not silently vanish.
fn systemd_analyze() -> Option<Command> {
    let present = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing and CI is set: install the systemd package"
        );
        eprintln!("skipped: no systemd-analyze");
        return None;
    }
    let mut command = Command::new("systemd-analyze");
    command
        .env("SYSTEMD_PAGER", "cat")
        .env("SYSTEMD_COLORS", "0")
        .env("LC_ALL", "C");
    Some(command)
}

#[test]
fn unit_sandbox_exposure_is_at_most_two() {
    let Some(mut analyze) = systemd_analyze() else {
        return;
    };
    let unit = systemd_dir().join("punctual.service");
    let output = analyze
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in the output: {}", describe(&output)));
    // "→ Overall exposure level for punctual.service: 1.1 OK 🙂" (the arrow
    // and the face vary with the locale): the first number is the score.
    let score: f64 = line
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure from {line:?}"));
    eprintln!("{}", line.trim());
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{stdout}"
    );
}

/// The value for `ExecStart=` that runs `path`: quoted when it has spaces,
/// with `%` doubled so systemd does not read it as a specifier.
fn exec_start_for(path: &str) -> String {
    let escaped = path.replace('%', "%%");
    if escaped.contains(char::is_whitespace) {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

#[test]
fn unit_verifies_cleanly_when_its_binary_exists() {
    let Some(mut analyze) = systemd_analyze() else {
        return;
    };
    let dir = TempDir::new("verify");
    let unit: String = shipped("punctual.service")
        .lines()
        .map(|line| match line.strip_prefix("ExecStart=") {
            Some(_) => format!("ExecStart={}\n", exec_start_for(BINARY)),
            None => format!("{line}\n"),
        })
        .collect();
    let copy = dir.path().join("punctual.service");
    fs::write(&copy, unit).expect("write the unit copy");

    let output = analyze
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("punctual")).collect();
    assert!(
        output.status.success(),
        "verify failed: {}",
        describe(&output)
    );
    assert!(
        about_unit.is_empty(),
        "verify warns about the unit:\n{}",
        about_unit.join("\n")
    );
    if !stderr.trim().is_empty() {
        eprintln!("systemd-analyze verify, about other units:\n{stderr}");
    }
}

/// `(variable, default)` for every flag in the daemon's `--help`.
fn flags_from_help() -> BTreeMap<String, Option<String>> {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PUNCTUAL_") {
            command.env_remove(name);
        }
    }
    let output = command.arg("--help").output().expect("run punctual --help");
    assert!(output.status.success(), "{}", describe(&output));
    let help = String::from_utf8_lossy(&output.stdout).into_owned();

    // One block per option, starting at its `--flag` line.
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") || (trimmed.starts_with('-') && trimmed.contains(", --")) {
            blocks.push(Vec::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push(trimmed);
        }
    }
    let mut flags = BTreeMap::new();
    for block in blocks {
        let bracketed = |prefix: &str| {
            block
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
                .map(|rest| rest.split(']').next().unwrap_or(rest).to_owned())
        };
        if let Some(env) = bracketed("[env: ") {
            let name = env.split('=').next().unwrap_or(&env).to_owned();
            flags.insert(name, bracketed("[default: "));
        }
    }
    assert!(
        flags.contains_key("PUNCTUAL_LISTEN"),
        "could not read flags from --help:\n{help}"
    );
    flags
}

#[test]
fn example_settings_name_every_flag_with_its_default_and_change_nothing() {
    let text = shipped("punctual.env");
    let mut listed = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with('#'),
            "the example must set nothing, but has {line:?}"
        );
        let Some((name, value)) = line.trim_start_matches('#').split_once('=') else {
            continue;
        };
        if name.starts_with("PUNCTUAL_") || name == "RUST_LOG" {
            assert!(
                listed.insert(name.to_owned(), value.to_owned()).is_none(),
                "{name} is listed twice"
            );
        }
    }
    assert!(listed.remove("RUST_LOG").is_some(), "RUST_LOG is listed");

    let flags = flags_from_help();
    assert_eq!(
        listed.keys().collect::<BTreeSet<_>>(),
        flags.keys().collect::<BTreeSet<_>>(),
        "punctual.env and `punctual --help` list different variables"
    );
    for (name, default) in &flags {
        if let Some(default) = default {
            assert_eq!(
                &listed[name], default,
                "{name} shows a value other than its default"
            );
        } else {
            assert_eq!(
                listed[name], "",
                "{name} has no default, so its example line is empty"
            );
        }
    }
}

fn unit_number(unit: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    let values: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect();
    match values[..] {
        [value] => value
            .parse()
            .unwrap_or_else(|e| panic!("{key}={value} is not a number: {e}")),
        _ => panic!("the unit should set {key}= exactly once, has {values:?}"),
    }
}

#[test]
fn unit_limits_leave_room_for_the_default_caps() {
    let unit = shipped("punctual.service");
    let nofile = unit_number(&unit, "LimitNOFILE");
    let (caps, warnings) = punctual::sizing::caps_for(nofile, None, None).expect("serves");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        caps.connections as u64,
        punctual::sizing::DEFAULT_MAX_CONNECTIONS,
        "LimitNOFILE={nofile} lowers the default connection cap"
    );

    // One thread per connection (connection thread, then writer), up to
    // 1024 workers, and the fixed threads — for every connection the
    // descriptor limit allows, so raising --max-connections needs no edit here.
    let tasks = unit_number(&unit, "TasksMax");
    let connections = punctual::sizing::allowed_connections(nofile);
    let needed = connections * punctual::sizing::THREADS_PER_CONNECTION + 1024 + 64;
    assert!(
        tasks >= needed,
        "TasksMax={tasks} is below the {needed} threads LimitNOFILE={nofile} allows"
    );
}

/// Stand-ins for `id`, `getent`, `sudo`, `cargo` and `systemctl` that log
/// their arguments to `calls.log`, so the installer can be watched building
/// and restarting without root, another account, or the machine's systemd.
struct Stubs {
    dir: TempDir,
}

impl Stubs {
    fn new() -> Stubs {
        let dir = TempDir::new("stubs");
        let log = dir.path().join("calls.log");
        let log = log.display();
        let scripts = [
            // The installer believes it runs as root (it usually does, under sudo).
            (
                "id",
                format!("#!/bin/sh\necho \"id $*\" >>'{log}'\necho 0\n"),
            ),
            (
                "getent",
                "#!/bin/sh\necho \"$2:x:1000:1000::/home/$2:/bin/sh\"\n".to_owned(),
            ),
            // Logs the account and runs the command after `--` as is.
            (
                "sudo",
                format!(
                    "#!/bin/sh\necho \"sudo $*\" >>'{log}'\nwhile [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"\n"
                ),
            ),
            // A "build" that writes a different binary each time.
            (
                "cargo",
                format!(
                    "#!/bin/sh\necho \"cargo $* in=$(pwd) home=$HOME\" >>'{log}'\n\
                     mkdir -p \"$CARGO_TARGET_DIR/release\"\n\
                     printf '#!/bin/sh\\n# build %s\\n' \"$(date +%s%N)\" >\"$CARGO_TARGET_DIR/release/punctual\"\n\
                     chmod 755 \"$CARGO_TARGET_DIR/release/punctual\"\n"
                ),
            ),
            (
                "systemctl",
                format!("#!/bin/sh\necho \"systemctl $*\" >>'{log}'\n"),
            ),
        ];
        for (name, text) in scripts {
            let path = dir.path().join(name);
            fs::write(&path, text).expect("write a stub");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod a stub");
        }
        Stubs { dir }
    }

    /// `PATH` with the stubs first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// From now on the `cargo` stub logs its call and fails, building nothing.
    fn fail_builds(&self) {
        let log = self.dir.path().join("calls.log");
        let text = format!(
            "#!/bin/sh\necho \"cargo $* in=$(pwd)\" >>'{}'\nexit 1\n",
            log.display()
        );
        fs::write(self.dir.path().join("cargo"), text).expect("rewrite the cargo stub");
    }

    /// The installer, run as `sudo` would run it for `user`, building.
    fn install(&self, destdir: &Path, target: &Path, user: &str) -> String {
        let output = Command::new(systemd_dir().join("install.sh"))
            .env("DESTDIR", destdir)
            .env("SUDO_USER", user)
            .env("SYSTEMCTL", self.dir.path().join("systemctl"))
            .env("CARGO_TARGET_DIR", target)
            .env("PATH", self.path())
            .output()
            .expect("run systemd/install.sh");
        assert!(output.status.success(), "install.sh: {}", describe(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The installer of `checkout`, building, run as root runs it without
    /// sudo: no `SUDO_USER`, and `DESTDIR` and `CARGO_TARGET_DIR` only when
    /// given.
    fn install_as_plain_root(
        &self,
        checkout: &Path,
        destdir: Option<&Path>,
        target: Option<&Path>,
    ) -> Output {
        let mut command = Command::new(checkout.join("systemd/install.sh"));
        command
            .env_remove("SUDO_USER")
            .env_remove("DESTDIR")
            .env_remove("CARGO_TARGET_DIR")
            .env("SYSTEMCTL", self.dir.path().join("systemctl"))
            .env("PATH", self.path());
        if let Some(destdir) = destdir {
            command.env("DESTDIR", destdir);
        }
        if let Some(target) = target {
            command.env("CARGO_TARGET_DIR", target);
        }
        command.output().expect("run install.sh of the checkout")
    }

    /// The calls logged since the last look, one per line.
    fn calls(&self) -> Vec<String> {
        let log = self.dir.path().join("calls.log");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        text.lines()
            .filter(|l| !l.starts_with("id "))
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn under_sudo_the_installer_builds_as_the_invoking_user_and_restarts_only_on_upgrade() {
    let stubs = Stubs::new();
    let dest = TempDir::new("sudo");
    let target = TempDir::new("target");
    let repo = env!("CARGO_MANIFEST_DIR");
    let files = staged(dest.path(), "/usr/local");

    stubs.install(dest.path(), target.path(), "alice");
    let calls = stubs.calls();
    let sudo: Vec<&String> = calls.iter().filter(|c| c.starts_with("sudo ")).collect();
    assert_eq!(sudo.len(), 1, "one build through sudo: {calls:?}");
    assert!(
        sudo[0]
            .starts_with("sudo -u alice -H -- env HOME=/home/alice PATH=/home/alice/.cargo/bin:"),
        "the build runs as alice, with her home and her cargo first on PATH: {calls:?}"
    );
    assert!(
        calls.contains(&format!(
            "cargo build --release --locked in={repo} home=/home/alice"
        )),
        "cargo builds the repository as alice: {calls:?}"
    );
    assert_eq!(
        fs::read(&files.binary).expect("the binary is installed"),
        fs::read(target.path().join("release/punctual")).expect("the build's binary"),
        "the binary installed is the one just built"
    );
    let systemctl: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("systemctl"))
        .collect();
    assert_eq!(
        systemctl,
        ["systemctl daemon-reload"],
        "a first install starts nothing"
    );

    // An upgrade: the unit is installed and the new build differs.
    let out = stubs.install(dest.path(), target.path(), "alice");
    let calls = stubs.calls();
    let systemctl: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("systemctl"))
        .collect();
    assert_eq!(
        systemctl,
        [
            "systemctl daemon-reload",
            "systemctl try-restart punctual.service"
        ],
        "an upgrade restarts a running service so the new binary runs"
    );
    assert!(out.contains("restarted"), "{out}");

    // Nothing changed: nothing to restart.
    let output = Command::new(systemd_dir().join("install.sh"))
        .args(["--binary"])
        .arg(&files.binary)
        .env("DESTDIR", dest.path())
        .env("SYSTEMCTL", stubs.dir.path().join("systemctl"))
        .output()
        .expect("run systemd/install.sh");
    assert!(output.status.success(), "{}", describe(&output));
    let calls = stubs.calls();
    assert_eq!(
        calls,
        ["systemctl daemon-reload"],
        "an install that changes nothing restarts nothing"
    );
}

/// A `MemoryHigh=`/`MemoryMax=` value in MiB (`1314M`).
fn unit_mebibytes(unit: &str, key: &str) -> f64 {
    let prefix = format!("{key}=");
    let value = unit
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("the unit should set {key}="));
    value
        .strip_suffix('M')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key}={value} should be a number of MiB, like 1314M"))
}

#[test]
fn unit_memory_limits_follow_the_documented_sizing_of_the_bounded_queues() {
    const MIB: f64 = 1024.0 * 1024.0;
    // The figures the unit's comment uses.
    const MESSAGE: f64 = 4608.0;
    const PER_CLIENT: f64 = 96.0 * 1024.0;
    const BASE_MIB: f64 = 32.0;
    let c = punctual::Config::default();
    let channels =
        punctual::sizing::OUTCOME_CHANNEL_CAPACITY + punctual::sizing::BROADCAST_CHANNEL_CAPACITY;
    let queued = (c.queue + c.workers) as f64 * c.max_body as f64;
    let pages = (punctual::sizing::MAX_PAGES_IN_FLIGHT * punctual::sizing::MAX_PAGE_BYTES) as f64;
    let clients = punctual::sizing::DEFAULT_MAX_CLIENTS as f64;
    let needed = (c.history_bytes as f64
        + queued
        + channels as f64 * MESSAGE
        + pages
        + clients * PER_CLIENT)
        / MIB
        + BASE_MIB;

    let unit = shipped("punctual.service");
    let documented: f64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("#   total"))
        .and_then(|rest| {
            rest.trim()
                .trim_start_matches('≈')
                .split_whitespace()
                .next()
        })
        .and_then(|n| n.parse().ok())
        .expect("the unit's comment states the total, as `#   total ... ≈ N MiB`");
    assert!(
        (documented - needed).abs() < 1.0,
        "the comment says {documented} MiB, the defaults add up to {needed:.1} MiB"
    );
    let high = unit_mebibytes(&unit, "MemoryHigh");
    let max = unit_mebibytes(&unit, "MemoryMax");
    assert!(
        high >= needed.floor(),
        "MemoryHigh={high}M is below the {needed:.0} MiB the defaults need"
    );
    assert!(
        max >= high * 1.1 && max <= needed * 2.0,
        "MemoryMax={max}M should leave room above MemoryHigh={high}M and stay near {needed:.0} MiB"
    );
}

/// A checkout holding what the installer reads (`systemd/`), in a fresh
/// directory below `parent`, writable by its owner only, as a clone made
/// with umask 022 is.
fn checkout_copy(parent: &Path) -> TempDir {
    let checkout = TempDir::under(parent, "checkout");
    let dir = checkout.path().join("systemd");
    fs::create_dir(&dir).expect("create systemd/ in the checkout");
    for (name, mode) in [
        ("install.sh", 0o755),
        ("punctual.service", 0o644),
        ("punctual.env", 0o644),
    ] {
        let path = dir.join(name);
        fs::copy(systemd_dir().join(name), &path).expect("copy into the checkout");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod the copy");
    }
    for dir in [checkout.path(), dir.as_path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod the copy");
    }
    checkout
}

/// Gives `path` and everything below it to `uid`.
fn chown_all(path: &Path, uid: u32) {
    chown(path, Some(uid), Some(uid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if fs::symlink_metadata(path).expect("stat").is_dir() {
        for entry in fs::read_dir(path).expect("list") {
            chown_all(&entry.expect("a directory entry").path(), uid);
        }
    }
}

/// This machine's own installed files, if any: a refused run without
/// `DESTDIR` must leave them as they were.
fn live_files() -> Vec<Option<(u32, u64, u64, SystemTime)>> {
    let paths = [
        "/usr/local/bin/punctual",
        "/etc/systemd/system/punctual.service",
        "/etc/default/punctual",
    ];
    paths
        .iter()
        .map(|path| {
            let meta = fs::symlink_metadata(path).ok()?;
            Some((meta.mode(), meta.len(), meta.ino(), meta.modified().ok()?))
        })
        .collect()
}

#[test]
fn as_plain_root_the_installer_refuses_to_build_a_checkout_root_does_not_own() {
    let stubs = Stubs::new();
    // Were the refusal missing, the "build" would fail before anything is
    // installed, so even the run without DESTDIR cannot reach this
    // machine's files.
    stubs.fail_builds();
    let checkout = checkout_copy(&std::env::temp_dir());
    // Someone else's checkout. Run by root, the test gives the copy to
    // nobody (65534); run by anyone else, the copy is already theirs.
    if fs::metadata(checkout.path()).expect("stat").uid() == 0 {
        chown_all(checkout.path(), 65534);
    }
    let checkout_before = snapshot(checkout.path());
    let live_before = live_files();
    let dest = TempDir::new("plain-root");

    // The `id` stub makes the installer see root whoever runs the test.
    for destdir in [None, Some(dest.path())] {
        let output = stubs.install_as_plain_root(checkout.path(), destdir, None);
        assert!(
            !output.status.success(),
            "DESTDIR={destdir:?}: root must not build another account's checkout: {}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        for words in [
            "refusing to build as root",
            "sudo",
            "--no-build",
            "--binary",
        ] {
            assert!(
                stderr.contains(words),
                "DESTDIR={destdir:?}: the refusal should say {words:?}: {}",
                describe(&output)
            );
        }
        let calls = stubs.calls();
        assert!(calls.is_empty(), "nothing may be run: {calls:?}");
        assert_eq!(
            snapshot(checkout.path()),
            checkout_before,
            "the checkout is left alone"
        );
        assert!(
            !checkout.path().join("target").exists(),
            "no build directory"
        );
        assert!(
            snapshot(dest.path()).is_empty(),
            "a refused run installs nothing"
        );
        assert_eq!(
            live_files(),
            live_before,
            "the machine's files are untouched"
        );
    }
}

#[test]
fn as_plain_root_the_installer_builds_a_checkout_only_root_can_write() {
    // Needs root, and a place no other account can write, up to /: the
    // build's own temp directory usually is one when root runs the tests.
    let checkout = checkout_copy(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let others_may_write =
        |dir: &Path| fs::metadata(dir).is_ok_and(|m| m.uid() != 0 || m.mode() & 0o022 != 0);
    if let Some(dir) = checkout
        .path()
        .ancestors()
        .find(|d| others_may_write(d) || others_may_write(&d.join(".cargo")))
    {
        eprintln!(
            "skipped: {} is not root's alone, so the installer rightly refuses there",
            dir.display()
        );
        return;
    }
    let stubs = Stubs::new();
    let dest = TempDir::new("root-only");
    let target = checkout.path().join("target");

    let output = stubs.install_as_plain_root(checkout.path(), Some(dest.path()), Some(&target));
    assert!(
        output.status.success(),
        "root may build a checkout only root can write: {}",
        describe(&output)
    );
    let calls = stubs.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("cargo build --release --locked in=")),
        "built as root, without sudo: {calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("sudo ")),
        "no sudo: {calls:?}"
    );
    assert_eq!(
        fs::read(staged(dest.path(), "/usr/local").binary).expect("the binary is installed"),
        fs::read(target.join("release/punctual")).expect("the build's binary"),
    );

    // One directory in it that its group may write is enough to refuse:
    // cargo runs build scripts from target/ without rebuilding them.
    let loose = target.join("release");
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o775)).expect("chmod g+w");
    let before = snapshot(dest.path());
    let output = stubs.install_as_plain_root(checkout.path(), Some(dest.path()), Some(&target));
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{} (owner root, mode 775)", loose.display())),
        "the refusal names what others may write: {stderr}"
    );
    assert!(stubs.calls().is_empty(), "nothing is run");
    assert_eq!(snapshot(dest.path()), before, "nothing is installed");
}

#[test]
fn install_makes_existing_settings_root_only() {
    let dest = TempDir::new("settings-mode");
    let files = staged(dest.path(), "/usr/local");
    let settings = "PUNCTUAL_TOKEN=an-operator-secret-of-enough-bytes\n";
    fs::create_dir_all(files.settings.parent().expect("etc/default")).expect("mkdir");
    fs::write(&files.settings, settings).expect("write the operator's settings");
    fs::set_permissions(&files.settings, fs::Permissions::from_mode(0o644)).expect("chmod 0644");

    let out = install(dest.path(), &[]);
    assert_eq!(
        mode(&files.settings),
        0o600,
        "settings that may hold the token must end up root only: {out}"
    );
    assert_eq!(
        fs::read_to_string(&files.settings).expect("settings still there"),
        settings,
        "only the mode changes"
    );
}

#[test]
fn unit_lets_only_loopback_through_by_default() {
    let unit = shipped("punctual.service");
    let values = |key: &str| -> Vec<String> {
        let prefix = format!("{key}=");
        unit.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(values("IPAddressDeny"), ["any"]);
    assert_eq!(
        values("IPAddressAllow"),
        ["localhost"],
        "the default listener is loopback; a drop-in opens more"
    );
}

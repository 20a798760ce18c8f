//! End to end: the real binary's TUI in a pseudo-terminal against the sandbox. The screen is
//! what a vt100 emulator makes of the bytes the TUI writes; keys are typed into the pty.
//! Phase 1 is applied through the keys (select, a, y), the step turns done, the sandbox's
//! NodePool has changed (read through kubectl), q quits with status 0.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Sandbox;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

struct Screen {
    parser: Arc<Mutex<vt100::Parser>>,
}

impl Screen {
    fn contents(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    fn wait_for(&self, what: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let now = self.contents();
            if now.contains(what) {
                return now;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what:?}; the screen:\n{now}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn phase_1_applied_through_the_keys_changes_the_sandbox_and_q_quits_cleanly() {
    let sb = Sandbox::start("tui-e2e", &[]);
    let journal = common::scratch("tui-e2e").join("journal.jsonl");
    let pty = native_pty_system().openpty(PtySize { rows: 40, cols: 140, pixel_width: 0, pixel_height: 0 }).unwrap();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_archshift"));
    cmd.args(["tui", "--plan", "plans/sandbox.yaml", "--journal", journal.to_str().unwrap()]);
    cmd.args(["--kubeconfig", sb.kubeconfig().to_str().unwrap()]);
    cmd.cwd(env!("CARGO_MANIFEST_DIR"));
    cmd.env("GITLAB_URL", &sb.gitlab_url);
    cmd.env("GITLAB_TOKEN", &sb.gitlab_token);
    cmd.env("TERM", "xterm-256color");
    cmd.env_remove("KUBECONFIG");
    let mut child = pty.slave.spawn_command(cmd).unwrap();
    drop(pty.slave);
    let screen = Screen { parser: Arc::new(Mutex::new(vt100::Parser::new(40, 140, 0))) };
    let mut reader = pty.master.try_clone_reader().unwrap();
    let parser = screen.parser.clone();
    let raw = Arc::new(Mutex::new(Vec::new()));
    let all = raw.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            parser.lock().unwrap().process(&buf[..n]);
            all.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut keys = pty.master.take_writer().unwrap();
    let mut press = |k: &str| {
        keys.write_all(k.as_bytes()).unwrap();
        keys.flush().unwrap();
    };

    let first = screen.wait_for("Phase 1 NodePool (0/1)", 30);
    assert!(first.contains("LIVE") && first.contains(&sb.gitlab_url), "the header names GitLab:\n{first}");
    assert!(first.contains("›· nodepool/spot-pool"), "the NodePool step is selected first:\n{first}");
    press("a");
    let dialog = screen.wait_for("Apply nodepool/spot-pool?", 10);
    assert!(dialog.contains("argo/WorkflowTemplate/ci/build-images"), "its pins are listed:\n{dialog}");
    press("y");
    let done = screen.wait_for("Phase 1 NodePool (1/1)", 90);
    assert!(done.contains("✓ nodepool/spot-pool"), "{done}");

    assert_eq!(sb.pool_archs(), r#"["amd64","arm64"]"#);

    press("q");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "q did not quit:\n{}", screen.contents());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    let bytes = raw.lock().unwrap().clone();
    let printed = String::from_utf8_lossy(&bytes);
    assert!(printed.contains("\u{1b}[?1049l"), "the alternate screen was left on quit");
    assert!(!printed.contains(&sb.gitlab_token), "the token reached the screen");
}

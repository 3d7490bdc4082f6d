//! The shipped image and the arm64 binary on the test bed: finding podman and
//! qemu-user (skip when absent, fail under CI=true), building what the tests
//! run with the project's own make targets, a container handle, and a
//! service account whose token and CA are mounted the way the kubelet does.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{bed, repo_root, unique};

/// True under CI (`CI=true`), where a missing tool is a failure, not a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `name` on PATH. Absent: under CI a panic; otherwise a printed SKIP line
/// naming `test` and how to install it, and None.
pub fn tool(name: &str, test: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !under_ci(),
            "{test}: {name} is not installed and CI=true ({install})"
        );
        // Straight to stderr: the test harness captures eprintln! of passing tests.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP {test}: {name} not found on PATH ({install})"
        );
    }
    found
}

/// The target directory this test binary was built in (`<dir>/debug/deps/..`).
pub fn target_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_k8s-job-worker"));
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Runs `make ARGS` in the repository with SHIP_TARGET_DIR = our target dir.
fn make(args: &[&str]) {
    let t0 = Instant::now();
    let mut cmd = Command::new("make");
    // Not the variables cargo sets for this test process: build scripts (ring's)
    // track some of them, and the nested build would rebuild half the tree.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k == "CARGO"
            || k == "OUT_DIR"
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&*k);
        }
    }
    let st = cmd
        .current_dir(repo_root())
        .args(args)
        .arg(format!("SHIP_TARGET_DIR={}", target_dir().display()))
        .env("CARGO_TARGET_DIR", target_dir())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("run make");
    assert!(st.success(), "make {args:?}: {st}");
    eprintln!(
        "[container] make {args:?} took {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// scripts/podman.sh ARGS (vfs storage, runc, the project's containers.conf).
pub fn podman() -> Command {
    let mut c = Command::new(repo_root().join("scripts/podman.sh"));
    c.current_dir(repo_root());
    c
}

pub fn podman_out(args: &[&str]) -> Output {
    podman().args(args).output().expect("run scripts/podman.sh")
}

/// The amd64 image to test: $TEST_IMAGE (e.g. CI's `k8s-job-worker:0.1.0-amd64`
/// from `make image`), else one built now from the current tree by
/// `make image IMAGE_ARCHS=amd64 SHIP_IMAGE=k8s-job-worker:test` (so a stale
/// image is never tested, and the release manifest list is left alone).
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Ok(i) = std::env::var("TEST_IMAGE") {
            let out = podman_out(&["image", "exists", &i]);
            assert!(out.status.success(), "TEST_IMAGE={i} does not exist");
            return i;
        }
        make(&[
            "image",
            "IMAGE_ARCHS=amd64",
            "SHIP_IMAGE=k8s-job-worker:test",
        ]);
        "k8s-job-worker:test-amd64".to_string()
    })
}

/// The aarch64 static binary: $TEST_ARM64_BIN, else built by `make static-arm64`.
pub fn arm64_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TEST_ARM64_BIN") {
            return PathBuf::from(p);
        }
        make(&["static-arm64"]);
        target_dir().join("aarch64-unknown-linux-musl/release/k8s-job-worker")
    })
}

/// A ServiceAccount `k8s-job-worker` in `ns` with deploy/'s Roles and
/// RoleBindings (rbac-leader.yaml, rbac-jobs.yaml, both bound in `ns`), and
/// a directory holding `token` (TokenRequest), `ca.crt` and `namespace`, as
/// the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount.
pub fn service_account_dir(ns: &str) -> PathBuf {
    let b = bed();
    for file in ["serviceaccount.yaml", "rbac-leader.yaml", "rbac-jobs.yaml"] {
        for mut o in yaml_docs(&repo_root().join("deploy").join(file)) {
            o["metadata"]["namespace"] = json!(ns);
            if let Some(subjects) = o["subjects"].as_array_mut() {
                for s in subjects {
                    s["namespace"] = json!(ns);
                }
            }
            let plural = match o["kind"].as_str().unwrap_or_default() {
                "ServiceAccount" => "serviceaccounts",
                "Role" => "roles",
                "RoleBinding" => "rolebindings",
                k => panic!("{file}: unexpected kind {k}"),
            };
            let api = o["apiVersion"].as_str().unwrap_or_default();
            let base = if api == "v1" {
                "/api/v1".to_string()
            } else {
                format!("/apis/{api}")
            };
            let (code, body) = b.kube_post(&format!("{base}/namespaces/{ns}/{plural}"), &o);
            assert_eq!(code, 201, "creating {file} {}: {body}", o["kind"]);
        }
    }
    let (code, tr) = b.kube_post(
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/k8s-job-worker/token"),
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}}),
    );
    assert_eq!(code, 201, "TokenRequest: {tr}");
    let token = tr["status"]["token"].as_str().expect("status.token");
    let dir = b.dir.join(unique("serviceaccount"));
    std::fs::create_dir_all(&dir).expect("sa dir");
    std::fs::write(dir.join("token"), token).expect("token");
    std::fs::write(dir.join("ca.crt"), &b.ca_pem).expect("ca.crt");
    std::fs::write(dir.join("namespace"), ns).expect("namespace");
    // Readable by uid 65532 in the container, like the kubelet's projected volume.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["token", "ca.crt", "namespace"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

/// Every YAML document of `path` as JSON (the bed's python has PyYAML).
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new(&bed().python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .expect("run python");
    assert!(out.status.success(), "converting {}", path.display());
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// A container started with `podman run` in the foreground (its output in a
/// log file in the bed's dir); removed on drop, its log printed on a panic.
pub struct Container {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Container {
    /// `podman run --rm --name <unique> ARGS` (ARGS end with the image and its arguments).
    pub fn run(args: &[String]) -> Container {
        let name = unique("kjw");
        let log = bed().dir.join(format!("container-{name}.log"));
        let f = std::fs::File::create(&log).expect("container log");
        let child = podman()
            .args(["run", "--rm", "--name", &name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawn podman run");
        Container { name, child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The container's main process as the host sees it, once it runs.
    pub fn host_pid(&self, timeout: Duration) -> Option<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = podman_out(&["inspect", "--format", "{{.State.Pid}}", &self.name]);
            if let Some(pid) = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|p| *p > 0)
            {
                return Some(pid);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `podman kill --signal SIG` (e.g. "TERM"), as the kubelet stops a pod.
    pub fn kill(&self, signal: &str) {
        let out = podman_out(&["kill", "--signal", signal, &self.name]);
        assert!(
            out.status.success(),
            "podman kill --signal {signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits for `podman run` to end (the container's exit status).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman_out(&["rm", "-f", "-t", "0", &self.name]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- container {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.logs()
            );
        }
    }
}

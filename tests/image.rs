//! The shipped image and the arm64 build, run for real on the test bed.
//!
//! - `image_runs_in_cluster_style_*`: the scratch image under podman + runc,
//!   configured the way a pod is (service-account token, ca.crt and namespace
//!   mounted at /var/run/secrets/kubernetes.io/serviceaccount, only
//!   KUBERNETES_SERVICE_HOST/PORT for the API server, `--read-only`,
//!   `--cap-drop ALL`, no-new-privileges, uid 65532), RBAC exactly deploy/'s
//!   Roles: seed 002 gives 0, 1, 2; SIGTERM releases the Lease within
//!   SHUTDOWN_GRACE and the container exits 0; /healthz and /readyz answer
//!   from inside it. The first test of the in-cluster configuration path.
//! - `image_passes_check_image`: scripts/check-image.sh (size, user, files, no
//!   shell, binary and SBOM, --version) on that image, and the same script
//!   refuses an image with a shell in it that runs as root.
//! - `arm64_binary_under_qemu_runs_seed_002`: the aarch64 static binary under
//!   qemu-aarch64-static as the worker on the bed: 0, 1, 2.
//! - `deployment_runs_the_image_make_image_builds`: mk/ship.mk's image name,
//!   Cargo.toml's version and deploy/deployment.yaml agree; the Containerfile
//!   stays COPY-only and non-root.
//!
//! Without podman (or qemu-aarch64-static) a test prints SKIP and passes,
//! except under CI=true, where it fails.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::time::{Duration, Instant};

use support::container::{
    Container, arm64_bin, image, podman, podman_out, service_account_dir, tool,
};
use support::worker::{Launcher, Q, calls_for, free_port, make_pvc, message, statuses};
use support::{WebhookReceiver, bed, repo_root, unique, wait_for};

const SHUTDOWN_GRACE: u64 = 20;

/// Status line fields of /proc/PID/status (`Uid:`, `CapEff:`, `NoNewPrivs:`).
fn proc_status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[test]
fn image_runs_in_cluster_style_seed_002_gives_0_1_2_and_sigterm_releases_the_lease() {
    let test = "image_runs_in_cluster_style";
    if tool("podman", test, "apt-get install -y podman runc").is_none() {
        return;
    }
    let image = image();
    let b = bed();
    let hook = WebhookReceiver::start();
    let d = Launcher::new(Q::Redis)
        .ns_tag("image")
        .instance_tag("img")
        .deploy();
    let sa = service_account_dir(&d.ns);
    make_pvc(&d.ns);
    let api_port = b.api_url.rsplit(':').next().unwrap().to_string();
    let http_port = free_port();
    let pod = format!("{}-pod-0", d.instance);
    let env = [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()),
        ("KUBERNETES_SERVICE_PORT", api_port),
        ("POD_NAME", pod.clone()),
        ("POD_NAMESPACE", d.ns.clone()),
        ("LEADER_ELECTION_LOCK_NAME", d.lock.clone()),
        ("WORKER_INSTANCE", d.instance.clone()),
        ("ALLOWED_NAMESPACES", d.ns.clone()),
        ("ALLOWED_ENV_REFS", "configmap/busybox-default".into()),
        ("ALLOWED_PVCS", "ps-pvc".into()),
        ("HTTP_SERVER_PORT", http_port.to_string()),
        ("POLLING_INTERVAL", "1".into()),
        ("SHUTDOWN_GRACE", SHUTDOWN_GRACE.to_string()),
        ("QUEUE_TYPE", "redis".into()),
        ("REDIS_ENDPOINT", format!("127.0.0.1:{}", d.redis_port)),
        ("REDIS_JOB_KEY_PREFIX", d.redis_prefix.clone()),
        ("RUST_LOG", "info,k8s_job_worker=debug".into()),
    ];
    let mut args: Vec<String> = [
        "--network",
        "host",
        "--read-only",
        // No tmpfs on /tmp, /run either: a pod's readOnlyRootFilesystem has none.
        "--read-only-tmpfs=false",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!(
        "{}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        sa.display()
    ));
    for (k, v) in &env {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.push(image.to_string());
    let mut c = Container::run(&args);

    // It runs as 65532 with no capabilities and no way to gain privileges.
    let pid = c
        .host_pid(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the container did not start:\n{}", c.logs()));
    assert_eq!(proc_status(pid, "Uid"), "65532 65532 65532 65532");
    assert_eq!(proc_status(pid, "Gid"), "65532 65532 65532 65532");
    assert_eq!(proc_status(pid, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(pid, "CapPrm"), "0000000000000000");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");

    // In-cluster configuration: it found the API server and took the Lease
    // with the mounted token alone.
    assert!(
        wait_for(Duration::from_secs(30), || d.holder() == pod),
        "the Lease is not held by {pod} (holder {:?}):\n{}",
        d.holder(),
        c.logs()
    );

    // Health and readiness answer from inside the read-only container.
    let get = |path: &str| -> u16 {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        agent
            .get(&format!("http://127.0.0.1:{http_port}{path}"))
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(20), || get("/readyz") == 200),
        "/readyz never answered 200:\n{}",
        c.logs()
    );
    assert_eq!(get("/healthz"), 200);

    let (id, body) = message(&d, &hook, |_| {});
    d.send(&body);
    let done = wait_for(Duration::from_secs(90), || {
        statuses(&calls_for(&hook, &id))
            .iter()
            .any(|s| [2, 3, 99].contains(s))
    });
    let got = statuses(&calls_for(&hook, &id));
    assert!(done, "no terminal callback for {id}: {got:?}\n{}", c.logs());
    assert_eq!(got, vec![0, 1, 2], "{}", c.logs());
    let jobs = d.jobs();
    assert_eq!(jobs.len(), 1, "one Job for the seed message");
    assert!(
        wait_for(Duration::from_secs(10), || d.queued() == 0),
        "the message is still queued"
    );
    assert!(
        !c.logs().contains(" 403 ") && !c.logs().contains("forbidden"),
        "deploy/'s RBAC was not enough:\n{}",
        c.logs()
    );

    // SIGTERM, as the kubelet sends it: the Lease is released within
    // SHUTDOWN_GRACE and the process exits 0.
    let t0 = Instant::now();
    c.kill("TERM");
    let released = wait_for(Duration::from_secs(SHUTDOWN_GRACE), || {
        d.holder().is_empty()
    });
    let took = t0.elapsed();
    assert!(
        released,
        "the Lease is still held by {:?} {took:?} after SIGTERM:\n{}",
        d.holder(),
        c.logs()
    );
    let st = c
        .wait(Duration::from_secs(SHUTDOWN_GRACE + 5))
        .unwrap_or_else(|| panic!("still running {SHUTDOWN_GRACE} s after SIGTERM"));
    assert!(
        st.success(),
        "exit status after SIGTERM: {st}\n{}",
        c.logs()
    );
    eprintln!(
        "[image] {image}: seed 0,1,2; Lease released {:.2}s after SIGTERM (exit {st})",
        took.as_secs_f64()
    );
    // The Lease object is still there, released (not deleted).
    let (code, lease) = b.kube_get(&format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
        d.ns, d.lock
    ));
    assert_eq!(code, 200, "{lease}");
    assert_eq!(
        lease["spec"]["holderIdentity"].as_str().unwrap_or(""),
        "",
        "{lease}"
    );
}

#[test]
fn image_passes_check_image_and_the_check_refuses_a_shell_running_as_root() {
    let test = "image_passes_check_image";
    if tool("podman", test, "apt-get install -y podman runc").is_none() {
        return;
    }
    let image = image();
    let base = image
        .strip_suffix("-amd64")
        .expect("the amd64 image is NAME-amd64");
    let check = |name: &str| {
        std::process::Command::new(repo_root().join("scripts/check-image.sh"))
            .env("IMAGE", name)
            .env("IMAGE_ARCHS", "amd64")
            .env("IMAGE_ENGINE", "podman")
            .env("CARGO_TARGET_DIR", support::container::target_dir())
            .output()
            .expect("run scripts/check-image.sh")
    };
    let out = check(base);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "check-image.sh {image}:\n{text}");
    for want in [
        "user: 65532:65532",
        "no shell or package manager",
        "files: exactly 5",
        "/bin/sh cannot be started",
        "--version",
        "SBOM = ",
    ] {
        assert!(
            text.contains(want),
            "check-image.sh did not report {want:?}"
        );
    }

    // The same check on an image derived from it with a shell, run as root: refused.
    let ctx = bed().dir.join(unique("bad-image"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("sh"), "#!/nonexistent\n").unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        format!("FROM {image}\nCOPY sh /bin/sh\nUSER 0:0\n"),
    )
    .unwrap();
    let bad = format!("localhost/{}:test", unique("kjw-bad"));
    let st = podman()
        .args(["build", "--quiet", "--pull=never", "-t"])
        .stdout(std::process::Stdio::null())
        .arg(format!("{bad}-amd64"))
        .arg(&ctx)
        .status()
        .expect("podman build");
    assert!(st.success(), "podman build of the bad image: {st}");
    let out = check(&bad);
    let _ = podman_out(&["rmi", "-f", &format!("{bad}-amd64")]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !out.status.success(),
        "check-image.sh passed a bad image:\n{text}"
    );
    assert!(
        text.contains("FAIL ") && text.contains("user: 0:0"),
        "{text}"
    );
    assert!(text.contains("contains: sh"), "{text}");
    assert!(text.contains("files differ"), "{text}");
}

#[test]
fn arm64_binary_under_qemu_runs_seed_002_gives_0_1_2() {
    let test = "arm64_binary_under_qemu";
    let Some(qemu) = tool(
        "qemu-aarch64-static",
        test,
        "apt-get install -y qemu-user-static",
    ) else {
        return;
    };
    let bin = arm64_bin();
    let elf = std::process::Command::new("readelf")
        .arg("-h")
        .arg(bin)
        .output()
        .expect("readelf");
    assert!(
        String::from_utf8_lossy(&elf.stdout).contains("AArch64"),
        "{} is not an aarch64 ELF",
        bin.display()
    );
    // The launcher clears the environment and runs one program: a wrapper that
    // execs the emulator on the aarch64 binary.
    let wrapper = bed().dir.join(unique("arm64-worker"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            qemu.display(),
            bin.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let hook = WebhookReceiver::start();
    let w = Launcher::new(Q::Redis)
        .bin(wrapper)
        .ns_tag("arm64")
        .instance_tag("arm")
        .die_with_parent()
        .start();
    // The process really is the emulator running the aarch64 binary (once
    // the wrapper's shell has exec'd it).
    let exe = || std::fs::read_link(format!("/proc/{}/exe", w.pid())).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(10), || exe()
            .ends_with("qemu-aarch64-static")),
        "worker process is {}",
        exe().display()
    );
    make_pvc(&w.ns);
    assert!(
        wait_for(Duration::from_secs(60), || w.holder() == w.name),
        "the arm64 worker did not take the Lease:\n{}",
        w.logs()
    );
    let (id, body) = message(&w, &hook, |_| {});
    w.send(&body);
    let done = wait_for(Duration::from_secs(120), || {
        statuses(&calls_for(&hook, &id))
            .iter()
            .any(|s| [2, 3, 99].contains(s))
    });
    let got = statuses(&calls_for(&hook, &id));
    assert!(done, "no terminal callback for {id}: {got:?}\n{}", w.logs());
    assert_eq!(got, vec![0, 1, 2], "{}", w.logs());
    assert_eq!(w.jobs().len(), 1);
    // SIGTERM reaches the binary through the emulator and releases the Lease.
    w.sigterm();
    assert!(
        wait_for(Duration::from_secs(SHUTDOWN_GRACE), || w
            .holder()
            .is_empty()),
        "the arm64 worker kept the Lease after SIGTERM:\n{}",
        w.logs()
    );
}

#[test]
fn deployment_runs_the_image_make_image_builds() {
    // mk/ship.mk's SHIP_IMAGE, Cargo.toml's version and deploy/deployment.yaml agree.
    let mk = std::fs::read_to_string(repo_root().join("mk/ship.mk")).unwrap();
    let ship = mk
        .lines()
        .find_map(|l| l.strip_prefix("SHIP_IMAGE"))
        .and_then(|l| l.split("?=").nth(1))
        .map(str::trim)
        .expect("SHIP_IMAGE ?= in mk/ship.mk");
    assert_eq!(
        ship,
        format!("k8s-job-worker:{}", env!("CARGO_PKG_VERSION"))
    );
    let deployment = std::fs::read_to_string(repo_root().join("deploy/deployment.yaml")).unwrap();
    let images: Vec<&str> = deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(str::trim)
        .collect();
    assert_eq!(images, vec![ship], "deploy/deployment.yaml's image");
    let containerfile =
        std::fs::read_to_string(repo_root().join("deploy/Containerfile.scratch")).unwrap();
    assert!(containerfile.contains("USER 65532:65532"));
    assert!(
        !containerfile.lines().any(|l| l.starts_with("RUN")),
        "Containerfile.scratch must stay COPY-only (it builds air-gapped for every platform)"
    );
}

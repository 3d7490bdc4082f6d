//! `SqsQueue` and the AWS credential providers against a real moto server
//! (moto[server]==5.2.5 from the venv at ~/.cache/k8s-job-worker/venv-moto-5.2.5,
//! or $MOTO_VENV) with signature checking on: static IAM keys, web identity
//! through moto's STS, and container credentials from a tiny local HTTP
//! endpoint. Each test starts its own moto (its auth counter is global to the
//! server). Set SKIP_MOTO=1 to skip; otherwise a missing moto is a failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_job_worker::aws::{
    ContainerAuth, ContainerProvider, CredentialsProvider, StaticProvider, provider_from_lookup,
};
use k8s_job_worker::queue::sqs::SqsQueue;
use k8s_job_worker::queue::{Handle, Queue, QueueError, Received};

const REGION: &str = "us-east-1";

fn venv() -> PathBuf {
    if let Ok(v) = std::env::var("MOTO_VENV") {
        return PathBuf::from(v);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    Path::new(&home).join(".cache/k8s-job-worker/venv-moto-5.2.5")
}

fn skip() -> bool {
    if std::env::var("SKIP_MOTO").as_deref() == Ok("1") {
        eprintln!("SKIP_MOTO=1: skipping the moto SQS tests");
        return true;
    }
    false
}

/// A moto server on a free port. It runs under `sh`, which kills it when
/// its stdin (our pipe) closes, so it also dies if this test process dies.
struct Moto {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    log: PathBuf,
}

impl Moto {
    fn start(name: &str) -> Moto {
        let bin = venv().join("bin/moto_server");
        assert!(
            bin.exists(),
            "moto is missing at {}: create it with `python3 -m venv DIR && DIR/bin/pip install \
             'moto[server]==5.2.5'`, or set SKIP_MOTO=1 to skip these tests",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::env::temp_dir().join(format!("sqs-moto-{}-{name}.log", std::process::id()));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" -H 127.0.0.1 -p "$1" >"$2" 2>&1 & pid=$!; read _; kill $pid; wait $pid"#)
            .arg(&bin)
            .arg(port.to_string())
            .arg(&log)
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto");
        let stdin = child.stdin.take();
        let moto = Moto {
            child,
            stdin,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not listen on {port}: {}",
                std::fs::read_to_string(&moto.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Makes the next `n` requests unauthenticated (moto's reset-auth API
    /// sets INITIAL_NO_AUTH_ACTION_COUNT and zeroes the request counter).
    fn allow_unauthenticated(&self, n: u32) {
        let resp = ureq::post(format!("{}/moto-api/reset-auth", self.url))
            .send(n.to_string().as_bytes())
            .expect("reset-auth");
        assert_eq!(resp.status().as_u16(), 200);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.stdin.take()); // sh reads EOF and kills moto
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the bootstrap script created.
struct Fixture {
    access_key_id: String,
    secret_access_key: String,
    queue: String,
    fifo: String,
    dead: String,
    role_arn: String,
}

/// Uses the four unauthenticated requests for IAM (user, policy, key, and a
/// get_user that uses up the window), then creates the queues and a role for
/// web identity with the new key.
const BOOTSTRAP: &str = r#"
import boto3, json, sys
ep = sys.argv[1]
kw = dict(endpoint_url=ep, region_name="us-east-1",
          aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="worker")
allow = lambda action: json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": action, "Resource": "*"}]})
iam.put_user_policy(UserName="worker", PolicyName="all", PolicyDocument=allow("*"))
key = iam.create_access_key(UserName="worker")["AccessKey"]
iam.get_user(UserName="worker")
kw.update(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
sqs = boto3.client("sqs", **kw)
q = sqs.create_queue(QueueName="jobs")["QueueUrl"]
f = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
d = sqs.create_queue(QueueName="dead")["QueueUrl"]
iam = boto3.client("iam", **kw)
trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
    "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/example"},
    "Action": "sts:AssumeRoleWithWebIdentity"}]})
role = iam.create_role(RoleName="worker-role", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
iam.put_role_policy(RoleName="worker-role", PolicyName="sqs", PolicyDocument=allow("sqs:*"))
print(json.dumps({"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"],
                  "queue": q, "fifo": f, "dead": d, "role_arn": role}))
"#;

fn bootstrap(moto: &Moto) -> Fixture {
    let out = Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(BOOTSTRAP)
        .arg(&moto.url)
        .output()
        .expect("run the bootstrap script");
    assert!(
        out.status.success(),
        "bootstrap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bootstrap JSON");
    let s = |k: &str| v[k].as_str().expect(k).to_string();
    Fixture {
        access_key_id: s("access_key_id"),
        secret_access_key: s("secret_access_key"),
        queue: s("queue"),
        fifo: s("fifo"),
        dead: s("dead"),
        role_arn: s("role_arn"),
    }
}

/// Runs a Python snippet with argv: moto URL, access key id, secret, `args`;
/// returns its stdout as JSON.
fn python(moto: &Moto, fx: &Fixture, code: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(code)
        .arg(&moto.url)
        .arg(&fx.access_key_id)
        .arg(&fx.secret_access_key)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python JSON")
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_defaults()
}

fn static_creds(fx: &Fixture) -> Arc<dyn CredentialsProvider> {
    Arc::new(StaticProvider::new(
        &fx.access_key_id,
        &fx.secret_access_key,
        None,
    ))
}

fn queue(url: &str, creds: Arc<dyn CredentialsProvider>) -> SqsQueue {
    SqsQueue::new(url, REGION, creds, agent()).expect("SqsQueue::new")
}

/// Receives until `want` messages arrived (or 10 s passed).
fn receive_n(q: &mut SqsQueue, want: usize) -> Vec<Received> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < want && Instant::now() < deadline {
        got.extend(q.receive(10, Duration::from_secs(1)).expect("receive"));
    }
    got
}

fn body(r: &Received) -> &str {
    std::str::from_utf8(&r.body).expect("utf-8 body")
}

#[test]
fn sqs_queue_against_moto() {
    if skip() {
        return;
    }
    let moto = Moto::start("sqs");
    let fx = bootstrap(&moto);
    let mut q = queue(&fx.queue, static_creds(&fx));
    assert_eq!(q.kind(), "sqs");
    assert_eq!(q.recover().expect("recover"), 0);

    // Empty queue: a short poll returns nothing.
    assert!(
        q.receive(10, Duration::ZERO)
            .expect("empty receive")
            .is_empty()
    );

    // send / receive / ack
    q.send(br#"{"id":"a","n":1}"#).expect("send");
    let got = receive_n(&mut q, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(body(&got[0]), r#"{"id":"a","n":1}"#);
    assert_eq!(got[0].receive_count, 1);
    q.ack(&[got[0].handle.clone()]).expect("ack");
    // Acking again: moto answers ReceiptHandleIsInvalid, which is only a warning.
    q.ack(&[got[0].handle.clone()])
        .expect("ack of a deleted message");
    assert!(q.receive(10, Duration::ZERO).expect("receive").is_empty());

    // retry_later: invisible for the delay, then redelivered with a higher count.
    q.send(b"retry me").expect("send");
    let first = receive_n(&mut q, 1);
    assert_eq!(first.len(), 1);
    q.retry_later(&first[0].handle, Duration::from_secs(2))
        .expect("retry_later");
    assert!(
        q.receive(10, Duration::ZERO).expect("receive").is_empty(),
        "message must stay invisible during the delay"
    );
    let again = receive_n(&mut q, 1);
    assert_eq!(again.len(), 1);
    assert_eq!(body(&again[0]), "retry me");
    assert_eq!(again[0].receive_count, 2);
    q.retry_later(&again[0].handle, Duration::ZERO)
        .expect("retry now");
    let third = receive_n(&mut q, 1);
    assert_eq!(third[0].receive_count, 3);
    q.ack(&[third[0].handle.clone()]).expect("ack");

    // ack in chunks of ten: 13 messages settled in one call.
    for i in 0..13 {
        q.send(format!("bulk {i}").as_bytes()).expect("send bulk");
    }
    let bulk = receive_n(&mut q, 13);
    assert_eq!(bulk.len(), 13);
    let handles: Vec<Handle> = bulk.iter().map(|r| r.handle.clone()).collect();
    q.ack(&handles).expect("bulk ack");
    assert!(q.receive(10, Duration::ZERO).expect("receive").is_empty());

    // A Redis handle is refused, not sent.
    assert!(matches!(
        q.ack(&[Handle::Redis { raw: vec![1] }]),
        Err(QueueError::Permanent(_))
    ));

    // dead_letter with a dead-letter queue: moved there, deleted here.
    let mut q = queue(&fx.queue, static_creds(&fx))
        .with_dead_letter_url(&fx.dead)
        .expect("dead-letter URL");
    q.send(b"poison").expect("send");
    let poison = receive_n(&mut q, 1);
    q.dead_letter(
        &poison[0].handle,
        &poison[0].body,
        "render failed: bad template",
    )
    .expect("dead_letter");
    // Read it back with boto3 to see the "reason" message attribute.
    let moved = python(
        &moto,
        &fx,
        r#"
import boto3, json, sys
sqs = boto3.client("sqs", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
m = sqs.receive_message(QueueUrl=sys.argv[4], MessageAttributeNames=["All"],
                        WaitTimeSeconds=5)["Messages"][0]
sqs.delete_message(QueueUrl=sys.argv[4], ReceiptHandle=m["ReceiptHandle"])
print(json.dumps({"body": m["Body"],
                  "reason": m["MessageAttributes"]["reason"]["StringValue"]}))
"#,
        &[&fx.dead],
    );
    assert_eq!(moved["body"], "poison");
    assert_eq!(moved["reason"], "render failed: bad template");
    q.retry_later(&poison[0].handle, Duration::ZERO)
        .expect_err("the original is gone");

    // dead_letter without one: just deleted.
    let mut plain = queue(&fx.queue, static_creds(&fx));
    plain.send(b"doomed").expect("send");
    let doomed = receive_n(&mut plain, 1);
    plain
        .dead_letter(&doomed[0].handle, &doomed[0].body, "")
        .expect("dead_letter without a queue");
    assert!(
        plain
            .receive(10, Duration::ZERO)
            .expect("receive")
            .is_empty()
    );

    // FIFO: group id from "id", dedup id from the body hash.
    let mut fifo = queue(&fx.fifo, static_creds(&fx));
    fifo.send(br#"{"id":"job-1","step":1}"#)
        .expect("fifo send 1");
    fifo.send(br#"{"id":"job-1","step":2}"#)
        .expect("fifo send 2");
    fifo.send(br#"{"id":"job-1","step":2}"#)
        .expect("fifo duplicate is accepted and dropped");
    fifo.send(b"plain text").expect("fifo send, default group");
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 && Instant::now() < deadline {
        for r in fifo
            .receive(10, Duration::from_secs(1))
            .expect("fifo receive")
        {
            seen.push(body(&r).to_string());
            fifo.ack(&[r.handle]).expect("fifo ack");
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "plain text",
            r#"{"id":"job-1","step":1}"#,
            r#"{"id":"job-1","step":2}"#,
        ]
    );

    // Long poll: returns early when a message arrives, and honours the wait.
    let started = Instant::now();
    assert!(
        q.receive(1, Duration::from_secs(2))
            .expect("long poll")
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // A wrong secret is an authentication error, not a transient one.
    let wrong = Arc::new(StaticProvider::new(
        &fx.access_key_id,
        "not-the-secret",
        None,
    ));
    match queue(&fx.queue, wrong).receive(1, Duration::ZERO) {
        Err(QueueError::Auth(m)) => {
            eprintln!("wrong secret: {m}");
            assert!(m.contains("403 SignatureDoesNotMatch"), "{m}");
            assert!(!m.contains("not-the-secret"));
        }
        other => panic!("expected QueueError::Auth, got {other:?}"),
    }
    let unknown = Arc::new(StaticProvider::new("AKIAUNKNOWNKEY000000", "x", None));
    match queue(&fx.queue, unknown).send(b"x") {
        Err(QueueError::Auth(m)) => assert!(m.contains("403 InvalidClientTokenId"), "{m}"),
        other => panic!("expected QueueError::Auth, got {other:?}"),
    }

    // A queue that does not exist is a permanent error.
    let missing = format!("{}/123456789012/nope", moto.url);
    match queue(&missing, static_creds(&fx)).send(b"x") {
        Err(QueueError::Permanent(m)) => eprintln!("missing queue: {m}"),
        other => panic!("expected QueueError::Permanent, got {other:?}"),
    }

    // Nothing listening: transient.
    let closed = TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let gone = format!("http://127.0.0.1:{port}/123456789012/jobs");
    assert!(matches!(
        queue(&gone, static_creds(&fx)).receive(1, Duration::ZERO),
        Err(QueueError::Transient(_))
    ));
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sqs-moto-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write temp file");
    path
}

#[test]
fn web_identity_credentials_against_moto() {
    if skip() {
        return;
    }
    let moto = Moto::start("sts");
    let fx = bootstrap(&moto);
    let token_file = temp_file("web-identity-token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n");
    let vars: HashMap<&str, String> = HashMap::from([
        ("AWS_ROLE_ARN", fx.role_arn.clone()),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_STS_ENDPOINT", moto.url.clone()),
        ("AWS_REGION", REGION.to_string()),
    ]);
    let provider =
        provider_from_lookup(agent(), &|k| vars.get(k).cloned()).expect("web identity provider");

    // moto authenticates every action once its free window is used up,
    // including AssumeRoleWithWebIdentity (real STS does not sign it; moto
    // answers an unsigned one with a 500). Open a one-request window for it.
    moto.allow_unauthenticated(1);
    let creds = provider.credentials().expect("AssumeRoleWithWebIdentity");
    assert!(creds.access_key_id().starts_with("ASIA"), "{creds:?}");
    assert!(creds.session_token().is_some_and(|t| !t.is_empty()));
    let expiry = creds.expiry().expect("expiry");
    let left = expiry
        .duration_since(std::time::SystemTime::now())
        .expect("not expired");
    assert!(left > Duration::from_secs(3000), "{left:?}");
    // Cached: no second STS call (it would fail: the window is closed).
    let again = provider.credentials().expect("cached");
    assert_eq!(again.access_key_id(), creds.access_key_id());

    // SQS with the STS session credentials (moto checks the signature, the
    // session token and the role's policy).
    let mut q = queue(&fx.queue, provider.clone());
    q.send(b"via web identity")
        .expect("send with session creds");
    let got = receive_n(&mut q, 1);
    assert_eq!(body(&got[0]), "via web identity");
    q.ack(&[got[0].handle.clone()]).expect("ack");

    // The same session keys with a wrong session token are refused.
    let forged = Arc::new(StaticProvider::new(
        creds.access_key_id(),
        creds.secret_access_key(),
        Some("forged-token"),
    ));
    match queue(&fx.queue, forged).receive(1, Duration::ZERO) {
        Err(QueueError::Auth(m)) => eprintln!("forged session token: {m}"),
        other => panic!("expected QueueError::Auth, got {other:?}"),
    }

    // An STS failure reads as a sentence: a fresh provider, window closed.
    let provider =
        provider_from_lookup(agent(), &|k| vars.get(k).cloned()).expect("web identity provider");
    let e = provider
        .credentials()
        .expect_err("unsigned STS call after the window");
    eprintln!("sts failure: {e}");
    assert!(
        e.to_string()
            .starts_with("aws: sts AssumeRoleWithWebIdentity: "),
        "{e}"
    );
    let _ = std::fs::remove_file(token_file);
}

/// A one-route HTTP server standing in for the EKS Pod Identity agent: it
/// answers with `creds_json` when the Authorization header equals the
/// current expected token.
struct CredentialsServer {
    url: String,
    expected: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

fn serve_credentials(creds_json: String) -> CredentialsServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/v1/credentials",
        listener.local_addr().expect("addr")
    );
    let expected = Arc::new(Mutex::new(String::new()));
    let hits = Arc::new(AtomicUsize::new(0));
    let (exp, h) = (expected.clone(), hits.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut auth = None;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("authorization")
                {
                    auth = Some(v.trim().to_string());
                }
                line.clear();
            }
            h.fetch_add(1, Ordering::SeqCst);
            let ok = auth.as_deref() == Some(exp.lock().expect("lock").as_str());
            let (status, body) = if ok {
                ("200 OK", creds_json.clone())
            } else {
                (
                    "401 Unauthorized",
                    r#"{"code":"AccessDeniedException","message":"bad token"}"#.to_string(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    CredentialsServer {
        url,
        expected,
        hits,
    }
}

/// UTC now + `secs` as ISO-8601, via date(1).
fn iso_in(secs: u64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("+{secs} seconds"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .expect("date");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

#[test]
fn container_credentials_against_moto() {
    if skip() {
        return;
    }
    let moto = Moto::start("container");
    let fx = bootstrap(&moto);
    // Expiring in 2 minutes: inside the refresh window, so every call refetches.
    let json = serde_json::json!({
        "AccessKeyId": fx.access_key_id,
        "SecretAccessKey": fx.secret_access_key,
        "Token": "",
        "Expiration": iso_in(120),
    })
    .to_string();
    let server = serve_credentials(json);
    let token_file = temp_file("pod-identity-token", "token-one\n");
    *server.expected.lock().expect("lock") = "token-one".into();

    let provider = Arc::new(
        ContainerProvider::new(
            agent(),
            &server.url,
            ContainerAuth::TokenFile(token_file.clone()),
        )
        .expect("container provider"),
    );
    let c = provider.credentials().expect("container credentials");
    assert_eq!(c.access_key_id(), fx.access_key_id);
    assert_eq!(c.session_token(), None);

    // The token file is re-read on each refresh.
    std::fs::write(&token_file, "token-two").expect("rotate token");
    *server.expected.lock().expect("lock") = "token-two".into();
    provider
        .credentials()
        .expect("refresh with the rotated token");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);

    let mut q = queue(&fx.queue, provider.clone());
    q.send(b"via container credentials").expect("send");
    let got = receive_n(&mut q, 1);
    assert_eq!(body(&got[0]), "via container credentials");
    q.ack(&[got[0].handle.clone()]).expect("ack");

    // A wrong token: a fresh provider has nothing to fall back on.
    let vars: HashMap<&str, String> = HashMap::from([
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", server.url.clone()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong".to_string()),
    ]);
    let bad = provider_from_lookup(agent(), &|k| vars.get(k).cloned()).expect("provider");
    let e = bad.credentials().expect_err("wrong token");
    assert_eq!(
        e.to_string(),
        "aws: container credentials: 401 AccessDeniedException: bad token"
    );
    match queue(&fx.queue, bad).receive(1, Duration::ZERO) {
        Err(QueueError::Auth(m)) => assert!(m.contains("401"), "{m}"),
        other => panic!("expected QueueError::Auth, got {other:?}"),
    }
    let _ = std::fs::remove_file(token_file);
}

/// While messages flow (the last receive was full), one receive keeps up to
/// three polls of 10 in flight and returns up to 30; every message arrives
/// once; once the queue is empty a receive goes back to a single poll.
#[test]
fn sqs_parallel_receives_while_messages_flow() {
    if skip() {
        return;
    }
    let moto = Moto::start("sqs");
    let fx = bootstrap(&moto);
    let mut q = queue(&fx.queue, static_creds(&fx));
    assert_eq!(q.max_batch(), 30);
    for i in 0..75 {
        q.send(format!("p{i}").as_bytes()).expect("send");
    }
    let mut seen = std::collections::HashSet::new();
    let mut biggest = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 75 && Instant::now() < deadline {
        let got = q.receive(30, Duration::from_secs(1)).expect("receive");
        biggest = biggest.max(got.len());
        for r in &got {
            assert!(seen.insert(body(r).to_string()), "{} twice", body(r));
        }
        let handles: Vec<_> = got.iter().map(|r| r.handle.clone()).collect();
        q.ack(&handles).expect("ack");
    }
    assert_eq!(seen.len(), 75);
    assert!(
        biggest > 10,
        "a flowing receive returned more than one poll's 10 ({biggest})"
    );
    assert!(q.receive(30, Duration::ZERO).expect("receive").is_empty());
}

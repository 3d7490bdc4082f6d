#!/usr/bin/env python3
"""Starts the local test bed for k8s-job-worker and keeps it up.

etcd -> kube-apiserver -> kube-controller-manager, kube-scheduler, kwok (+ 2
fake Nodes) -> redis-server -> moto_server (signature checking on), all on
127.0.0.1 with ports picked free at run time, everything under one temp dir.

Prints ONE line of JSON on stdout with every endpoint and credential, then waits
until stdin reaches EOF (the test process that owns the pipe exited, however it
exited) or SIGTERM/SIGINT/SIGHUP, then kills every child's process group and
removes the temp dir. Children also get PR_SET_PDEATHSIG, so even a SIGKILLed
bed.py leaves no process behind.

  bed.py [--bin DIR] [--foreground] [--kueue [--kueue-bin DIR]]

--foreground (make testbed-up): prints export lines for a shell instead of the
JSON and waits for Ctrl-C.

--kueue: also installs Kueue's CRDs and runs its manager out of cluster (its
admission webhooks served on 127.0.0.1 with a generated certificate and
registered with clientConfig.url). Off by default: it adds to the start time.

Run it with the moto venv's python (boto3 is needed for the IAM set-up).
Progress with timings and the log paths go to stderr.
"""

import argparse
import base64
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES_DIR = os.path.join(HERE, "kwok", "stages")
T0 = time.monotonic()
REGION = "us-east-1"
DIR_PREFIX = "k8s-job-worker-bed-"
STOP = threading.Event()  # set on stdin EOF or a signal


def log(msg):
    sys.stderr.write("[bed %6.2fs] %s\n" % (time.monotonic() - T0, msg))
    sys.stderr.flush()


class BedError(Exception):
    pass


_libc = None


def _pdeathsig():
    # Runs in the child between fork and exec: die with bed.py.
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held open together while picked)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


# Client rates and worker counts, raised so that pods and completions follow
# the creates (issue 11; measured in README.md "Throughput of the bed"). With
# the defaults (controller-manager qps 20 / burst 30 / 5 job syncs, scheduler
# 50 / 100, kwok 4 pod-stage workers) only 339 of a 2,000-Job burst were
# Complete after 300 s; with these, all 2,000 in 51-74 s. qps 300 and 1000
# measured alike on 2 shared cores (CPU, not the client rate, is then the
# limit); 300 leaves the API server some room for the creates.
# kwok's own client is not rate limited. TESTBED_RATES=default restores the
# components' defaults (for comparison).
KCM_RATES = ["--kube-api-qps=300", "--kube-api-burst=600", "--concurrent-job-syncs=50",
             "--concurrent-gc-syncs=50", "--concurrent-ttl-after-finished-syncs=20"]
SCHEDULER_QPS, SCHEDULER_BURST = 300, 600
KWOK_POD_PLAY_PARALLELISM = 32
if os.environ.get("TESTBED_RATES") == "default":  # the components' own defaults, to compare
    KCM_RATES, SCHEDULER_QPS, SCHEDULER_BURST, KWOK_POD_PLAY_PARALLELISM = [], 50, 100, 4

KUEUE_VERSION_FILE = os.path.join(HERE, "versions.env")
# The webhooks of Kueue's config/components/webhook/manifests.yaml that the bed
# registers: those for batch/v1 Jobs and for Kueue's own objects. The others
# (pods, deployments, kubeflow, ray, ...) belong to integrations the bed does
# not enable; registered with failurePolicy Fail they would refuse every pod.
KUEUE_WEBHOOK_PATHS = ("-batch-v1-job", "-kueue-x-k8s-io-")
# Kueue reads its metrics-server certificate from this fixed path when its
# internal certificate management is off (cmd/kueue/main.go); see README.
KUEUE_METRICS_CERT_DIR = "/etc/kueue/metrics/certs"


def pin(name):
    with open(KUEUE_VERSION_FILE) as f:
        for line in f:
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip()
    raise BedError("%s missing from %s" % (name, KUEUE_VERSION_FILE))


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def self_signed(key, crt, cn, *ext):
    """An EC P-256 key and a self-signed certificate (2 days)."""
    argv = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=" + cn]
    for e in ext:
        argv += ["-addext", e]
    openssl(*argv)


class Bed:
    def __init__(self, bindir, kueue_bindir=None):
        self.bindir = bindir
        self.kueue_bindir = kueue_bindir  # None: no Kueue
        self.procs = []  # (name, Popen, logpath)
        self.dir = tempfile.mkdtemp(prefix=DIR_PREFIX)
        with open(os.path.join(self.dir, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        self.info = {"dir": self.dir, "pids": {}}
        self._stopped = False

    # ---- processes -------------------------------------------------------
    def start(self, name, argv, env=None):
        path = os.path.join(self.dir, name + ".log")
        logf = open(path, "ab")
        e = dict(os.environ)
        if env:
            e.update(env)
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            env=e, cwd=self.dir, start_new_session=True, preexec_fn=_pdeathsig)
        logf.close()
        self.procs.append((name, p, path))
        self.info["pids"][name] = p.pid
        log("%s: started (pid %d), log %s" % (name, p.pid, path))
        return p

    def check_alive(self):
        for name, p, path in self.procs:
            if p.poll() is not None:
                raise BedError("%s exited with status %s" % (name, p.returncode), name)

    def tail(self, name, lines=40):
        for n, _p, path in self.procs:
            if n == name:
                try:
                    with open(path, "rb") as f:
                        data = f.read().decode("utf-8", "replace").splitlines()
                    return "\n".join(data[-lines:])
                except OSError as e:
                    return "(no log: %s)" % e
        return ""

    def wait_until(self, name, what, fn, timeout):
        """Polls fn() until it returns a truthy value; fails on timeout or if a child died."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if STOP.is_set():
                raise BedError("stopped during start-up (stdin closed or signal)")
            self.check_alive()
            try:
                v = fn()
                if v:
                    return v
            except Exception as e:  # noqa: BLE001 - anything means "not yet"
                last = e
            if time.monotonic() > deadline:
                raise BedError("%s: timed out after %ds waiting for %s (last error: %s)"
                               % (name, timeout, what, last), name)
            time.sleep(0.1)

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        for _name, p, _path in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 2  # a throwaway bed: no long graceful shutdowns
        for name, p, _path in reversed(self.procs):
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log("%s: still running 2 s after SIGTERM, SIGKILL" % name)
            try:  # the whole group, including anything a child forked
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if os.environ.get("TESTBED_KEEP_DIR"):
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        log("stopped")

    # ---- kube REST -------------------------------------------------------
    def kube(self, method, path, body=None, timeout=10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.info["api_url"] + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.info["admin_token"])
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/merge-patch+json"
                           if method == "PATCH" else "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ssl_ctx, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    # ---- components ------------------------------------------------------
    def run(self):
        b = self.bindir
        d = self.dir
        for exe in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
            if not os.access(os.path.join(b, exe), os.X_OK):
                raise BedError("missing %s/%s: run testbed/build.sh (make testbed)" % (b, exe))
        redis = shutil.which("redis-server")
        if not redis:
            raise BedError("redis-server not found: apt-get install -y redis-server")
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        if not os.access(moto, os.X_OK):
            moto = shutil.which("moto_server")
        if not moto:
            raise BedError("moto_server not found next to %s: run with the moto venv's python "
                           "(make venv)" % sys.executable)

        (etcd_port, etcd_peer, api_port, kcm_port, sched_port, kwok_port,
         redis_port, moto_port) = free_ports(8)

        # Keys and tokens.
        sa_key = os.path.join(d, "sa.key")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", sa_key],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        admin_token = secrets.token_hex(24)
        user_token = secrets.token_hex(24)
        tokens = os.path.join(d, "tokens.csv")
        with open(tokens, "w") as f:
            f.write('%s,admin,admin-uid,"system:masters"\n' % admin_token)
            f.write("%s,k8s-job-worker-test,worker-uid\n" % user_token)
        os.chmod(tokens, 0o600)
        admin_token_file = os.path.join(d, "admin.token")
        with open(admin_token_file, "w") as f:
            f.write(admin_token)
        self.info.update(admin_token=admin_token, admin_token_file=admin_token_file,
                         user_token=user_token, user_name="k8s-job-worker-test")
        log("keys and tokens ready")

        # etcd
        etcd_url = "http://127.0.0.1:%d" % etcd_port
        peer_url = "http://127.0.0.1:%d" % etcd_peer
        self.start("etcd", [
            os.path.join(b, "etcd"), "--name=bed", "--data-dir=" + os.path.join(d, "etcd"),
            "--listen-client-urls=" + etcd_url, "--advertise-client-urls=" + etcd_url,
            "--listen-peer-urls=" + peer_url, "--initial-advertise-peer-urls=" + peer_url,
            "--initial-cluster=bed=" + peer_url, "--unsafe-no-fsync", "--log-level=warn",
            "--quota-backend-bytes=2147483648"])

        def etcd_ok():
            with urllib.request.urlopen(etcd_url + "/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"
        self.wait_until("etcd", "/health", etcd_ok, 30)
        log("etcd: ready at %s" % etcd_url)

        # kube-apiserver
        cert_dir = os.path.join(d, "pki")
        os.makedirs(cert_dir)
        self.start("kube-apiserver", [
            os.path.join(b, "kube-apiserver"),
            "--etcd-servers=" + etcd_url,
            "--cert-dir=" + cert_dir,
            "--secure-port=%d" % api_port,
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-account-key-file=" + sa_key,
            "--service-account-signing-key-file=" + sa_key,
            "--token-auth-file=" + tokens,
            "--authorization-mode=Node,RBAC",
            "--disable-admission-plugins=TaintNodesByCondition",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--v=1"])
        ca_file = os.path.join(cert_dir, "apiserver.crt")
        self.wait_until("kube-apiserver", "its self-signed certificate",
                        lambda: os.path.exists(ca_file) and os.path.getsize(ca_file) > 0, 60)
        api_url = "https://127.0.0.1:%d" % api_port
        self.info.update(api_url=api_url, ca_file=ca_file)

        def readyz():
            # The file may be half written at first (leaf before CA): reload it each try.
            self.ssl_ctx = ssl.create_default_context(cafile=ca_file)
            st, _ = self.kube("GET", "/readyz", timeout=3)
            return st == 200
        self.wait_until("kube-apiserver", "/readyz", readyz, 90)
        log("kube-apiserver: ready at %s" % api_url)

        kubeconfig = os.path.join(d, "kubeconfig")
        with open(kubeconfig, "w") as f:
            f.write(
                "apiVersion: v1\nkind: Config\n"
                "clusters:\n- name: bed\n  cluster:\n    server: %s\n"
                "    certificate-authority: %s\n"
                "users:\n- name: admin\n  user:\n    token: %s\n"
                "contexts:\n- name: bed\n  context:\n    cluster: bed\n    user: admin\n"
                "    namespace: default\n"
                "current-context: bed\n" % (api_url, ca_file, admin_token))
        os.chmod(kubeconfig, 0o600)
        self.info["kubeconfig"] = kubeconfig

        # controllers, scheduler, kwok (in parallel)
        self.start("kube-controller-manager", [
            os.path.join(b, "kube-controller-manager"),
            "--kubeconfig=" + kubeconfig,
            "--authentication-kubeconfig=" + kubeconfig,
            "--authorization-kubeconfig=" + kubeconfig,
            "--controllers=job-controller,ttl-after-finished-controller,"
            "garbage-collector-controller,namespace-controller,serviceaccount-controller,"
            "serviceaccount-token-controller,root-ca-certificate-publisher-controller,"
            "pod-garbage-collector-controller,persistentvolume-binder-controller",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--bind-address=127.0.0.1", "--secure-port=%d" % kcm_port,
            "--service-account-private-key-file=" + sa_key,
            "--root-ca-file=" + ca_file,
            "--v=1"] + KCM_RATES)
        # The scheduler's --kube-api-qps/--kube-api-burst are deprecated: a config file.
        sched_conf = os.path.join(d, "kube-scheduler.yaml")
        with open(sched_conf, "w") as f:
            f.write("apiVersion: kubescheduler.config.k8s.io/v1\n"
                    "kind: KubeSchedulerConfiguration\n"
                    "clientConnection:\n  kubeconfig: %s\n  qps: %d\n  burst: %d\n"
                    "leaderElection:\n  leaderElect: false\n"
                    % (json.dumps(kubeconfig), SCHEDULER_QPS, SCHEDULER_BURST))
        self.start("kube-scheduler", [
            os.path.join(b, "kube-scheduler"),
            "--config=" + sched_conf,
            "--authentication-kubeconfig=" + kubeconfig,
            "--authorization-kubeconfig=" + kubeconfig,
            "--bind-address=127.0.0.1", "--secure-port=%d" % sched_port,
            "--v=1"])
        stages = sorted(os.path.join(STAGES_DIR, n) for n in os.listdir(STAGES_DIR)
                        if n.endswith(".yaml"))
        kwok_conf = os.path.join(d, "kwok.yaml")
        with open(kwok_conf, "w") as f:
            # A KwokConfiguration read from a file is not defaulted: every option
            # that kwok defaults (zz_generated.defaults.go) is spelt out.
            f.write("apiVersion: config.kwok.x-k8s.io/v1alpha1\n"
                    "kind: KwokConfiguration\n"
                    "options:\n"
                    "  podPlayStageParallelism: %d\n"
                    "  nodePlayStageParallelism: 4\n"
                    "  nodeLeaseParallelism: 4\n"
                    "  podsOnNodeSyncParallelism: 1\n"
                    "  enableDebuggingHandlers: true\n"
                    "  enableContentionProfiling: false\n"
                    "  enableProfilingHandler: true\n"
                    "  enablePodsOnNodeSyncListPager: true\n"
                    "  enablePodsOnNodeSyncStreamWatch: false\n" % KWOK_POD_PLAY_PARALLELISM)
        stages.insert(0, kwok_conf)
        kwok_argv = [os.path.join(b, "kwok"), "--kubeconfig=" + kubeconfig,
                     "--manage-all-nodes=true", "--cidr=10.244.0.0/16",
                     "--node-ip=10.200.0.1",
                     "--server-address=127.0.0.1:%d" % kwok_port,
                     "--node-lease-duration-seconds=0"]
        for s in stages:
            kwok_argv.append("--config=" + s)
        self.start("kwok", kwok_argv, env={"HOME": d})
        if self.kueue_bindir:
            self.kueue_start(kubeconfig)

        # Nodes
        def node(name, extra_labels, extra_alloc):
            alloc = {"cpu": "1000", "memory": "4Ti", "pods": "1000", "ephemeral-storage": "10Ti"}
            alloc.update(extra_alloc)
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                      "kubernetes.io/arch": "amd64", "type": "kwok"}
            labels.update(extra_labels)
            return {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": labels,
                                 "annotations": {"kwok.x-k8s.io/node": "fake",
                                                 "node.alpha.kubernetes.io/ttl": "0"}},
                    "spec": {},
                    "status": {"allocatable": alloc, "capacity": alloc, "phase": "Running"}}
        # k8s-node-1 is the node the seed example's nodeSelector names.
        nodes = [node("kwok-node-0", {}, {}),
                 node("k8s-node-1", {}, {}),
                 node("kwok-gpu-0", {"nvidia.com/gpu.present": "true",
                                     "testbed.k8s-job-worker.io/gpu": "true"},
                      {"nvidia.com/gpu": "8"})]
        for n in nodes:
            st, body = self.kube("POST", "/api/v1/nodes", n)
            if st not in (200, 201):
                raise BedError("creating node %s: %s %s" % (n["metadata"]["name"], st, body),
                               "kube-apiserver")
        self.info["nodes"] = [n["metadata"]["name"] for n in nodes]

        def nodes_ready():
            st, body = self.kube("GET", "/api/v1/nodes")
            if st != 200:
                return False
            ready = 0
            for item in body.get("items", []):
                for c in item.get("status", {}).get("conditions") or []:
                    if c.get("type") == "Ready" and c.get("status") == "True":
                        ready += 1
            return ready >= len(nodes)
        self.wait_until("kwok", "the Nodes to be Ready", nodes_ready, 60)
        log("kwok: nodes Ready")

        def default_sa():
            st, _ = self.kube("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return st == 200
        self.wait_until("kube-controller-manager", "ServiceAccount default/default",
                        default_sa, 60)
        log("kube-controller-manager: default ServiceAccount exists")
        if self.kueue_bindir:
            self.kueue_ready()

        # redis
        self.start("redis", [redis, "--port", str(redis_port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--daemonize", "no",
                             "--dir", d, "--protected-mode", "yes"])

        def redis_ok():
            with socket.create_connection(("127.0.0.1", redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        self.wait_until("redis", "PING", redis_ok, 20)
        self.info.update(redis_url="redis://127.0.0.1:%d/" % redis_port, redis_port=redis_port)
        log("redis: ready on port %d" % redis_port)

        # moto (3 unauthenticated actions for the IAM set-up below, then SigV4 checked)
        self.start("moto", [moto, "-H", "127.0.0.1", "-p", str(moto_port)],
                   env={"INITIAL_NO_AUTH_ACTION_COUNT": "3", "AWS_DEFAULT_REGION": REGION,
                        "MOTO_ALLOW_NONEXISTENT_REGION": "false"})
        sqs_endpoint = "http://127.0.0.1:%d" % moto_port

        def moto_ok():
            with socket.create_connection(("127.0.0.1", moto_port), timeout=1):
                return True
        self.wait_until("moto", "its port", moto_ok, 30)
        key_id, secret = self.moto_credentials(sqs_endpoint)
        self.info.update(sqs_endpoint=sqs_endpoint, aws_region=REGION,
                         aws_access_key_id=key_id, aws_secret_access_key=secret)
        log("moto: ready at %s (signature checking on)" % sqs_endpoint)
        self.info["kubeconfig"] = kubeconfig
        self.info["startup_seconds"] = round(time.monotonic() - T0, 2)

    # ---- Kueue ------------------------------------------------------------
    def kueue_start(self, kubeconfig):
        """Installs Kueue's CRDs, writes its certificates and configuration and
        starts the manager (out of cluster, leader election off). Its webhooks
        are registered by kueue_ready() once the manager serves them."""
        import yaml  # PyYAML ships in the moto venv
        t0 = time.monotonic()
        kb = self.kueue_bindir
        exe = os.path.join(kb, "kueue")
        conf_src = os.path.join(os.path.dirname(kb), "config")
        if not os.access(exe, os.X_OK) or not os.path.isdir(conf_src):
            raise BedError("missing %s or %s: run testbed/build.sh (make testbed)" % (exe, conf_src))
        d = os.path.join(self.dir, "kueue")
        certs = os.path.join(d, "certs")
        os.makedirs(certs)

        # CRDs, as they are in the module (no conversion webhook: v1beta2 is
        # the storage version and what Kueue and the harness use).
        crd_dir = os.path.join(conf_src, "crd", "bases")
        names = []
        for n in sorted(os.listdir(crd_dir)):
            if not n.endswith(".yaml"):
                continue
            with open(os.path.join(crd_dir, n)) as f:
                for doc in yaml.safe_load_all(f):
                    if not doc:
                        continue
                    st, body = self.kube(
                        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", doc)
                    if st not in (200, 201):
                        raise BedError("creating CRD %s: %s %s"
                                       % (doc["metadata"]["name"], st, body), "kube-apiserver")
                    names.append(doc["metadata"]["name"])

        def established():
            for n in names:
                st, body = self.kube(
                    "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + n)
                conds = (body.get("status", {}).get("conditions") or []) if st == 200 else []
                if not any(c.get("type") == "Established" and c.get("status") == "True"
                           for c in conds):
                    return False
            return True
        self.wait_until("kube-apiserver", "Kueue's CRDs to be Established", established, 60)
        log("kueue: %d CRDs established (%.1f s)" % (len(names), time.monotonic() - t0))

        st, body = self.kube("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kueue-system"}})
        if st not in (200, 201, 409):
            raise BedError("creating namespace kueue-system: %s %s" % (st, body), "kube-apiserver")

        # Webhook serving certificate: a throwaway CA and a leaf for IP 127.0.0.1.
        ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
        self_signed(ca_key, ca_crt, "k8s-job-worker-bed-kueue-ca",
                    "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign")
        key, csr, crt = (os.path.join(certs, "tls.key"), os.path.join(d, "tls.csr"),
                         os.path.join(certs, "tls.crt"))
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
        ext = os.path.join(d, "leaf.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                    "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n")
        openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
                "-out", crt, "-days", "2", "-extfile", ext)
        with open(ca_crt, "rb") as f:
            self.kueue_ca_bundle = base64.b64encode(f.read()).decode()
        self.kueue_metrics_cert()

        health_port, webhook_port = free_ports(2)
        with open(os.path.join(conf_src, "manager", "controller_manager_config.yaml")) as f:
            cfg = yaml.safe_load(f)
        cfg.update({
            "namespace": "kueue-system",
            "health": {"healthProbeBindAddress": "127.0.0.1:%d" % health_port},
            "metrics": {"bindAddress": "0"},  # off: nothing scrapes it
            "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": certs},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "clientConnection": {"qps": 200, "burst": 400},
            # batch/job only: the other integrations need CRDs the bed lacks.
            "integrations": {"frameworks": ["batch/job"]},
            # The visibility API server would bind 0.0.0.0:8082 and needs an APIService.
            "featureGates": {"VisibilityOnDemand": False},
        })
        conf = os.path.join(d, "config.yaml")
        with open(conf, "w") as f:
            yaml.safe_dump(cfg, f)
        self.kueue_webhook_port = webhook_port
        self.kueue_health_port = health_port
        self.kueue_t0 = t0
        self.start("kueue", [exe, "--config=" + conf], env={"KUBECONFIG": kubeconfig, "HOME": d})

    def kueue_metrics_cert(self):
        """Kueue (cmd/kueue/main.go) opens /etc/kueue/metrics/certs/tls.{crt,key} at
        start-up when its internal certificate management is off, even with metrics
        off. Any valid pair will do: made once per machine, atomically."""
        crt = os.path.join(KUEUE_METRICS_CERT_DIR, "tls.crt")
        key = os.path.join(KUEUE_METRICS_CERT_DIR, "tls.key")
        if os.path.exists(crt) and os.path.exists(key):
            return
        try:
            os.makedirs(KUEUE_METRICS_CERT_DIR, exist_ok=True)
            tmp = tempfile.mkdtemp(dir=KUEUE_METRICS_CERT_DIR)
        except OSError as e:
            raise BedError("Kueue needs %s (a fixed path in its main.go) and it cannot be made: "
                           "%s" % (KUEUE_METRICS_CERT_DIR, e))
        self_signed(os.path.join(tmp, "tls.key"), os.path.join(tmp, "tls.crt"),
                    "k8s-job-worker-bed-kueue-metrics")
        os.replace(os.path.join(tmp, "tls.key"), key)  # key first: crt marks "done"
        os.replace(os.path.join(tmp, "tls.crt"), crt)
        shutil.rmtree(tmp, ignore_errors=True)

    def kueue_ready(self):
        """Waits for the manager's /readyz (webhook server up), registers the Job and
        Kueue webhooks with clientConfig.url and checks the Job mutation end to end."""
        import yaml
        hp = self.kueue_health_port

        def readyz():
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % hp, timeout=2) as r:
                return r.status == 200
        self.wait_until("kueue", "/readyz", readyz, 90)
        conf_src = os.path.join(os.path.dirname(self.kueue_bindir), "config")
        with open(os.path.join(conf_src, "webhook", "manifests.yaml")) as f:
            docs = [doc for doc in yaml.safe_load_all(f) if doc]
        kept = []
        for doc in docs:
            hooks = []
            for h in doc.get("webhooks") or []:
                path = h["clientConfig"]["service"]["path"]
                if not any(k in path for k in KUEUE_WEBHOOK_PATHS):
                    continue
                h["clientConfig"] = {
                    "url": "https://127.0.0.1:%d%s" % (self.kueue_webhook_port, path),
                    "caBundle": self.kueue_ca_bundle}
                hooks.append(h)
                kept.append(h["name"])
            doc["webhooks"] = hooks
            doc["metadata"] = {"name": "kueue-" + doc["metadata"]["name"]}
            plural = {"MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
                      "ValidatingWebhookConfiguration": "validatingwebhookconfigurations"
                      }[doc["kind"]]
            st, body = self.kube("POST", "/apis/admissionregistration.k8s.io/v1/" + plural, doc)
            if st not in (200, 201):
                raise BedError("creating %s: %s %s" % (doc["kind"], st, body), "kube-apiserver")
        log("kueue: webhooks registered: %s" % ", ".join(sorted(kept)))

        # End to end: a dry-run Job with a queue name comes back suspended by
        # Kueue's mutating webhook (the API server calls it over TLS, verified).
        probe = {"apiVersion": "batch/v1", "kind": "Job",
                 "metadata": {"name": "kueue-webhook-probe",
                              "labels": {"kueue.x-k8s.io/queue-name": "bed-probe"}},
                 "spec": {"suspend": False, "template": {"spec": {
                     "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": "1"}}}]}}}}

        def mutated():
            st, body = self.kube("POST", "/apis/batch/v1/namespaces/default/jobs?dryRun=All",
                                 probe)
            if st not in (200, 201):
                raise BedError("dry-run Job: %s %s" % (st, body))
            return body.get("spec", {}).get("suspend") is True
        self.wait_until("kueue", "its Job webhook to suspend a queued Job", mutated, 30)
        secs = round(time.monotonic() - self.kueue_t0, 2)
        self.info["kueue"] = {"version": pin("KUEUE_VERSION"), "webhooks": True,
                              "webhook_port": self.kueue_webhook_port,
                              "health_port": hp, "start_seconds": secs,
                              "namespace": "kueue-system"}
        log("kueue: ready, webhooks verified (%.1f s after the CRDs went in)" % secs)

    def moto_credentials(self, endpoint):
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:
            raise BedError("boto3 missing (%s): run bed.py with the moto venv's python" % e, "moto")
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"})
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                           config=cfg)
        iam.create_user(UserName="k8s-job-worker-test")
        key = iam.create_access_key(UserName="k8s-job-worker-test")["AccessKey"]
        iam.put_user_policy(
            UserName="k8s-job-worker-test", PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        # Check that signatures are now checked: a wrong secret must be refused.
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id=key["AccessKeyId"],
                           aws_secret_access_key="wrong" + key["SecretAccessKey"], config=cfg)
        try:
            sqs.list_queues()
            raise BedError("moto accepted a wrong secret: signature checking is off", "moto")
        except BedError:
            raise
        except Exception as e:  # noqa: BLE001
            if "SignatureDoesNotMatch" not in str(e) and "403" not in str(e):
                raise BedError("moto: unexpected answer to a wrong secret: %s" % e, "moto")
        return key["AccessKeyId"], key["SecretAccessKey"]


def clean_stale_dirs():
    """Removes bed dirs left behind by a bed.py that was SIGKILLed (its children died with it)."""
    tmp = tempfile.gettempdir()
    for n in os.listdir(tmp):
        if not n.startswith(DIR_PREFIX):
            continue
        p = os.path.join(tmp, n)
        try:
            with open(os.path.join(p, "owner.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (OSError, ValueError):
            pass


def default_bindir(*args):
    out = subprocess.run(["bash", os.path.join(HERE, "build.sh")] + list(args), check=True,
                         stdout=subprocess.PIPE).stdout.decode().strip().splitlines()
    return out[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("TESTBED_BIN"),
                    help="directory with etcd, kube-*, kwok (default: $TESTBED_BIN or build.sh)")
    ap.add_argument("--foreground", action="store_true",
                    help="print shell export lines and wait for Ctrl-C")
    ap.add_argument("--kueue", action="store_true",
                    help="also run the Kueue manager (CRDs, webhooks on 127.0.0.1)")
    ap.add_argument("--kueue-bin", default=os.environ.get("TESTBED_KUEUE_BIN"),
                    help="directory with kueue (default: $TESTBED_KUEUE_BIN or build.sh --kueue)")
    args = ap.parse_args()

    stop = STOP

    def on_signal(signum, _frame):
        log("signal %d: stopping" % signum)
        stop.set()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    clean_stale_dirs()
    bindir = args.bin or default_bindir()
    kueue_bindir = None
    if args.kueue:
        kueue_bindir = args.kueue_bin or default_bindir("--kueue")
    if not args.foreground:
        # stdin EOF (the owner exited) stops the bed, even during start-up.
        def watch_stdin():
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()
    bed = None
    try:
        for attempt in (1, 2, 3):
            bed = Bed(bindir, kueue_bindir)
            try:
                bed.run()
                break
            except BedError as e:
                name = e.args[1] if len(e.args) > 1 else None
                tail = bed.tail(name) if name else ""
                if attempt < 3 and not stop.is_set() and "address already in use" in tail.lower():
                    log("%s: port taken meanwhile (another bed?); retrying with new ports" % name)
                    bed.stop()
                    continue
                log("START FAILED: %s" % e.args[0])
                if name:
                    sys.stderr.write("---- last lines of %s's log ----\n%s\n----\n" % (name, tail))
                return 1
            except Exception as e:  # noqa: BLE001
                log("START FAILED: %r" % e)
                return 1
        if stop.is_set():
            return 1
        log("bed up in %.1f s (dir %s)" % (time.monotonic() - T0, bed.dir))
        i = bed.info
        if args.foreground:
            print("# k8s-job-worker test bed is up; paste these into a shell. Ctrl-C stops it.")
            exports = {
                "KUBECONFIG": i["kubeconfig"], "TESTBED_API_URL": i["api_url"],
                "TESTBED_CA_FILE": i["ca_file"], "TESTBED_ADMIN_TOKEN": i["admin_token"],
                "TESTBED_USER_TOKEN": i["user_token"], "TESTBED_REDIS_URL": i["redis_url"],
                "TESTBED_SQS_ENDPOINT": i["sqs_endpoint"], "AWS_REGION": i["aws_region"],
                "AWS_ACCESS_KEY_ID": i["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": i["aws_secret_access_key"]}
            for k, v in exports.items():
                print("export %s='%s'" % (k, v))
            print("# e.g. curl --cacert $TESTBED_CA_FILE -H \"Authorization: Bearer "
                  "$TESTBED_ADMIN_TOKEN\" $TESTBED_API_URL/api/v1/nodes")
            print("# logs: %s/*.log" % bed.dir)
        else:
            print(json.dumps(i, sort_keys=True))
        sys.stdout.flush()
        while not stop.wait(0.5):
            for name, p, _path in bed.procs:
                if p.poll() is not None:
                    log("%s exited with status %s; last lines of its log:\n%s"
                        % (name, p.returncode, bed.tail(name, 20)))
                    stop.set()
        return 0
    finally:
        if bed is not None:
            bed.stop()


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # no interpreter finalisation racing the stdin thread

//! The SBOM (`make sbom`, scripts/sbom.py) and the license allowlist
//! (deploy/license-allowlist.txt). No test bed: these run `scripts/sbom.py`,
//! `cargo tree` and read Cargo.lock, all offline.
//!
//! - the SBOM lists exactly the crates of `cargo tree -e normal` for each
//!   shipped target, each with the SHA-256 Cargo.lock records, and the root's
//!   direct dependencies are Cargo.toml's `[dependencies]`;
//! - every shipped crate's license expression is allowed by the allowlist (an
//!   SPDX expression evaluator: OR needs one side, AND both, WITH its own line);
//! - two runs give the same bytes.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs scripts/sbom.py for `target` into a temp file; returns (text, JSON).
fn generate(target: &str, tag: &str) -> (String, Value) {
    let out = std::env::temp_dir().join(format!(
        "k8s-job-worker-sbom-{}-{tag}-{target}.json",
        std::process::id()
    ));
    let st = Command::new(python())
        .arg(root().join("scripts/sbom.py"))
        .args(["--target", target, "--out"])
        .arg(&out)
        .env("CARGO", cargo())
        .status()
        .expect("run python3 scripts/sbom.py");
    assert!(st.success(), "scripts/sbom.py --target {target}: {st}");
    let text = std::fs::read_to_string(&out).expect("sbom written");
    let _ = std::fs::remove_file(&out);
    let v: Value = serde_json::from_str(&text).expect("the SBOM is JSON");
    (text, v)
}

/// (name, version) of every crate `cargo tree -e normal` shows for `target`, root included.
fn cargo_tree(target: &str) -> BTreeSet<(String, String)> {
    let out = Command::new(cargo())
        .current_dir(root())
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--target",
            target,
        ])
        .args(["--prefix", "none", "--no-dedupe", "-f", "{p}"])
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "cargo tree failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?;
            let version = it.next()?.strip_prefix('v')?;
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

/// (name, version) → checksum from Cargo.lock (local packages have none).
fn lock_checksums() -> BTreeMap<(String, String), Option<String>> {
    let text = std::fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock");
    let field = |block: &str, key: &str| {
        block.lines().find_map(|l| {
            l.strip_prefix(&format!("{key} = \""))
                .and_then(|r| r.strip_suffix('"'))
                .map(str::to_string)
        })
    };
    text.split("[[package]]")
        .skip(1)
        .map(|b| {
            (
                (field(b, "name").unwrap(), field(b, "version").unwrap()),
                field(b, "checksum"),
            )
        })
        .collect()
}

fn components(bom: &Value) -> &Vec<Value> {
    bom["components"].as_array().expect("components")
}

fn key(c: &Value) -> (String, String) {
    (
        c["name"].as_str().unwrap().to_string(),
        c["version"].as_str().unwrap().to_string(),
    )
}

// ------------------------------------------------------------ SPDX expressions

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Id(String),
    And,
    Or,
    With,
    Open,
    Close,
}

fn lex(expr: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let spaced = expr.replace('(', " ( ").replace(')', " ) ");
    for w in spaced.split_whitespace() {
        out.push(match w {
            "AND" => Tok::And,
            "OR" => Tok::Or,
            "WITH" => Tok::With,
            "(" => Tok::Open,
            ")" => Tok::Close,
            id if id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.+:".contains(c)) =>
            {
                Tok::Id(id.to_string())
            }
            other => return Err(format!("{other:?} is not an SPDX identifier")),
        });
    }
    Ok(out)
}

/// Recursive descent over `or := and (OR and)*; and := with (AND with)*;
/// with := atom (WITH id)?; atom := id | ( or )`, evaluating as it goes.
struct Eval<'a> {
    toks: Vec<Tok>,
    pos: usize,
    allow: &'a HashSet<String>,
    /// Identifiers that were needed and not allowed (for the failure message).
    denied: Vec<String>,
}

impl Eval<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Result<bool, String> {
        let mut v = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let r = self.and()?;
            v = v || r;
        }
        Ok(v)
    }
    fn and(&mut self) -> Result<bool, String> {
        let mut v = self.with()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let r = self.with()?;
            v = v && r;
        }
        Ok(v)
    }
    fn with(&mut self) -> Result<bool, String> {
        match self.next() {
            Some(Tok::Open) => {
                let v = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(v),
                    t => Err(format!("expected ) but found {t:?}")),
                }
            }
            Some(Tok::Id(id)) => {
                let name = if self.peek() == Some(&Tok::With) {
                    self.pos += 1;
                    match self.next() {
                        Some(Tok::Id(e)) => format!("{id} WITH {e}"),
                        t => return Err(format!("expected an exception after WITH, found {t:?}")),
                    }
                } else {
                    id
                };
                let ok = self.allow.contains(&name);
                if !ok {
                    self.denied.push(name);
                }
                Ok(ok)
            }
            t => Err(format!("expected a license or ( but found {t:?}")),
        }
    }
}

/// Ok(()) when `expr` is satisfiable with only allowed licenses; Err names why not.
fn license_allowed(expr: &str, allow: &HashSet<String>) -> Result<(), String> {
    let mut e = Eval {
        toks: lex(expr)?,
        pos: 0,
        allow,
        denied: Vec::new(),
    };
    let v = e.or()?;
    if e.pos != e.toks.len() {
        return Err(format!("trailing tokens after position {}", e.pos));
    }
    if v {
        Ok(())
    } else {
        Err(format!("not allowed: {}", e.denied.join(", ")))
    }
}

fn allowlist(path: &Path) -> HashSet<String> {
    std::fs::read_to_string(path)
        .expect("deploy/license-allowlist.txt")
        .lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

// ------------------------------------------------------------------- tests

#[test]
fn sbom_lists_exactly_the_shipped_crates_with_lockfile_checksums() {
    let lock = lock_checksums();
    for target in TARGETS {
        let (_, bom) = generate(target, "list");
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["specVersion"], "1.5");
        assert!(
            bom["serialNumber"]
                .as_str()
                .is_some_and(|s| s.starts_with("urn:uuid:"))
        );
        let app = &bom["metadata"]["component"];
        assert_eq!(app["name"], "k8s-job-worker");
        assert_eq!(app["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(app["licenses"][0]["expression"], env!("CARGO_PKG_LICENSE"));

        let listed: BTreeSet<(String, String)> = components(&bom).iter().map(key).collect();
        assert_eq!(
            listed.len(),
            components(&bom).len(),
            "a crate is listed twice"
        );
        let mut tree = cargo_tree(target);
        assert!(tree.remove(&("k8s-job-worker".into(), env!("CARGO_PKG_VERSION").into())));
        assert_eq!(
            listed, tree,
            "SBOM vs cargo tree -e normal --target {target}"
        );
        let crates = listed.len() + 1; // and the worker itself, as check-static.sh counts
        assert!(
            crates <= 120,
            "{crates} crates: over the design card's budget of 120"
        );
        for c in components(&bom) {
            let k = key(c);
            assert_eq!(c["purl"], format!("pkg:cargo/{}@{}", k.0, k.1));
            let want = lock
                .get(&k)
                .unwrap_or_else(|| panic!("{k:?} is not in Cargo.lock"))
                .as_deref()
                .unwrap_or_else(|| panic!("{k:?} has no checksum in Cargo.lock"));
            assert_eq!(c["hashes"][0]["alg"], "SHA-256", "{k:?}");
            assert_eq!(c["hashes"][0]["content"], want, "{k:?}");
        }

        // The dependency graph: every ref is a component (or the root), and the
        // root depends on exactly Cargo.toml's [dependencies].
        let refs: HashSet<String> = components(&bom)
            .iter()
            .map(|c| c["bom-ref"].as_str().unwrap().to_string())
            .chain([app["bom-ref"].as_str().unwrap().to_string()])
            .collect();
        let deps = bom["dependencies"].as_array().expect("dependencies");
        assert_eq!(deps.len(), refs.len());
        for d in deps {
            assert!(refs.contains(d["ref"].as_str().unwrap()), "{d}");
            for on in d["dependsOn"].as_array().unwrap() {
                assert!(refs.contains(on.as_str().unwrap()), "{on} in {d}");
            }
        }
        let root_deps: BTreeSet<String> = deps
            .iter()
            .find(|d| d["ref"] == app["bom-ref"])
            .expect("the root's entry")["dependsOn"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = r.as_str().unwrap().strip_prefix("pkg:cargo/").unwrap();
                s.split('@').next().unwrap().to_string()
            })
            .collect();
        let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
        let section = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap();
        let declared: BTreeSet<String> = section
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
            .filter(|k| !k.is_empty() && !k.starts_with('#'))
            .collect();
        assert_eq!(root_deps, declared, "root dependsOn vs Cargo.toml");
    }
}

#[test]
fn every_shipped_crate_license_is_in_the_allowlist() {
    let allow = allowlist(&root().join("deploy/license-allowlist.txt"));
    let mut problems = Vec::new();
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for target in TARGETS {
        let (_, bom) = generate(target, "lic");
        for c in components(&bom)
            .iter()
            .chain([&bom["metadata"]["component"]])
        {
            let k = key(c);
            match c["licenses"][0]["expression"].as_str() {
                None => problems.push(format!("{} {}: no SPDX license expression", k.0, k.1)),
                Some(expr) => {
                    *found.entry(expr.to_string()).or_default() += 1;
                    if let Err(e) = license_allowed(expr, &allow) {
                        problems.push(format!("{} {} ({target}): {expr:?}: {e}", k.0, k.1));
                    }
                }
            }
        }
    }
    eprintln!("licenses found (crates × targets): {found:#?}");
    assert!(
        problems.is_empty(),
        "licenses outside deploy/license-allowlist.txt:\n{}",
        problems.join("\n")
    );
}

#[test]
fn license_expressions_are_evaluated_strictly() {
    let allow: HashSet<String> = ["MIT", "Apache-2.0", "ISC", "Apache-2.0 WITH LLVM-exception"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for ok in [
        "MIT",
        "MIT OR Apache-2.0",
        "GPL-3.0-only OR MIT",
        "Apache-2.0 AND ISC",
        "(MIT OR GPL-2.0-only) AND (ISC OR GPL-3.0-only)",
        "Apache-2.0 WITH LLVM-exception",
        "(MIT OR Apache-2.0) AND ISC",
    ] {
        assert_eq!(license_allowed(ok, &allow), Ok(()), "{ok}");
    }
    for bad in [
        "GPL-3.0-only",
        "MIT AND GPL-3.0-only",
        "(MIT OR Apache-2.0) AND AGPL-3.0-only",
        "GPL-2.0-only WITH Classpath-exception-2.0",
        "MIT WITH Foo-exception",
        "MIT OR",
        "(MIT",
        "MIT Apache-2.0",
        "MIT/Apache-2.0",
        "",
        "LicenseRef-proprietary",
    ] {
        assert!(
            license_allowed(bad, &allow).is_err(),
            "{bad:?} must be refused"
        );
    }
    let e = license_allowed("MIT AND SSPL-1.0", &allow).unwrap_err();
    assert!(e.contains("SSPL-1.0"), "{e}");
}

#[test]
fn sbom_is_reproducible() {
    let (a, _) = generate(TARGETS[0], "a");
    let (b, _) = generate(TARGETS[0], "b");
    assert!(a == b, "two runs of scripts/sbom.py differ");
}

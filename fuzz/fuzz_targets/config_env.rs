//! Fuzz target `config_env`: arbitrary bytes as the worker's environment
//! (`NAME=value` lines; set by the operator, lower risk, cheap to cover).
//! `Config::from_env` and `KubeConfig::from_env` must never panic: a bad value
//! is an error that names it.
#![no_main]

use std::collections::HashMap;

use k8s_job_worker::config::Config;
use k8s_job_worker::kube::client::KubeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = |k: &str| env.get(k).cloned();
    let _ = Config::from_env(&get);
    let _ = KubeConfig::from_env(&get);
});

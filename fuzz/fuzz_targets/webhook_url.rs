//! Fuzz target `webhook_url`: arbitrary bytes as a webhook URL from a message.
//! `WebhookGuard::check_url` (static, no DNS) must never panic, and whatever it
//! accepts under an allow-list must really name an allowed host.
#![no_main]

use k8s_job_worker::webhook_guard::WebhookGuard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let _ = WebhookGuard::default().check_url(url);
    let strict = WebhookGuard {
        allowed_hosts: vec!["*.example.com".into(), "10.0.0.5".into()],
        deny_ips: vec!["10.96.0.1".parse().expect("literal")],
        deny_sockets: Vec::new(),
        deny_private: true,
    };
    if strict.check_url(url).is_ok() {
        // 10.0.0.5 is private, so only *.example.com names can pass.
        let lower = url.to_ascii_lowercase();
        assert!(
            lower.contains(".example.com"),
            "accepted a host outside the allow-list: {url:?}"
        );
    }
});

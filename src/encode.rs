//! Small encodings shared by several boundaries: percent-encoding of URL query
//! values and SigV4 parameters (RFC 3986 unreserved characters kept), and
//! lowercase hex SHA-256 (Job names, webhook ids, SQS deduplication ids). Pure.

/// Percent-encodes every byte except A–Z a–z 0–9 `-` `_` `.` `~`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lowercase hex of SHA-256(`data`).
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(percent_encode("a=b,c/d ~é"), "a%3Db%2Cc%2Fd%20~%C3%A9");
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

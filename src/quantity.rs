//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`): the grammar of
//! k8s.io/apimachinery's resource.Quantity, parsed to a value in milli-units so
//! validation and policy can compare them. Pure; never panics on input.

/// Parses a quantity; returns its value in thousandths of the base unit
/// (cpu: millicores; memory: milli-bytes), saturating at i128 bounds.
pub fn parse_milli(s: &str) -> Result<i128, String> {
    let _ = s;
    todo!("helper A")
}

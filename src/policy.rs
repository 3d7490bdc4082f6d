//! Operator policy enforced before any API call: what a queue message may ask
//! for. Pure: `Policy::check` looks only at the validated message.

use crate::message::Message;

#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Empty = any namespace the RBAC permits.
    pub allowed_namespaces: Vec<String>,
}

impl Policy {
    /// `Err` names the rule that denied the message.
    pub fn check(&self, msg: &Message) -> Result<(), String> {
        if !self.allowed_namespaces.is_empty()
            && !self
                .allowed_namespaces
                .iter()
                .any(|n| *n == msg.job.namespace)
        {
            return Err(format!(
                "ALLOWED_NAMESPACES: job.namespace {:?} is not one of {}",
                msg.job.namespace,
                self.allowed_namespaces.join(",")
            ));
        }
        Ok(())
    }
}

//! AWS SQS over its JSON protocol (`X-Amz-Target: AmazonSQS.*`), signed with
//! SigV4 through `aws::sign`, on a plain blocking ureq agent.
// TEMPORARY stub until the sqs branch lands.
pub struct SqsQueue;
impl SqsQueue {
    pub fn new(
        _u: &str,
        _r: &str,
        _c: std::sync::Arc<dyn crate::aws::CredentialsProvider>,
        _a: ureq::Agent,
    ) -> Result<Box<dyn super::Queue>, String> {
        Err("not yet".into())
    }
}

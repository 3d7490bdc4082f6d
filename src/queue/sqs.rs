//! AWS SQS over its JSON protocol (`X-Amz-Target: AmazonSQS.*`), signed with
//! SigV4 through `aws::sign`, on a plain blocking ureq agent.

//! AWS request signing (SigV4 through aws-sigv4) and credential providers:
//! environment keys, web identity (STS AssumeRoleWithWebIdentity, as IRSA
//! does) and container credentials (EKS Pod Identity), refreshed before expiry.

"""The audit trail's hash chain (docs/security.md, "The audit trail")."""

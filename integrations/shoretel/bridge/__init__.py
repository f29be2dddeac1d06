"""The ShoreTel TAPI bridge, pure: protocol, HTTP client, simulator (docs/tapi-bridge.md).
May import integrations.observations and the standard library only; never Django."""

"""The HTTP layer: transport (session, auth pinning, retries, timeouts), pacer, wire format."""

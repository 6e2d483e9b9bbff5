"""loragate gateway: the Litestar HTTP API, auth, routing, streaming, store and the CLI."""

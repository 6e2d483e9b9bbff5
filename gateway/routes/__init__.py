"""HTTP route handlers; thin: they parse, call a service, and shape the response."""

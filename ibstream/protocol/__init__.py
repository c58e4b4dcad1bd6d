"""The wire protocol, shared by the server and the client: validation and encoding."""

"""Shared fixtures of the reward tests."""

import threading

import pytest


@pytest.fixture
def served():
    """``served(server) -> url``: run an HTTP server on a daemon thread for the test, then stop it."""
    servers = []

    def start(server):
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()

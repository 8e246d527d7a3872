"""Whether a download can work at all, asked once and quickly: the download clients (Hugging Face's, torchvision's)
retry for a minute or more before they give up, and an offline user should hear so in seconds."""
from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse


def host_unreachable(url: str, timeout: float = 3.0) -> str | None:
    """Why ``url``'s host cannot be reached now, or None when it answers: checked once, in a few seconds, because
    the download clients themselves retry for about a minute before they give up."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)
    outcome: list[str | None] = []

    def probe() -> None:  # in a thread: a name lookup has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host} cannot be reached: {exc.strerror or exc}")
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"{host} did not answer within {timeout:g} s"

"""Small HTTP helpers shared by the emulator tests."""

import urllib.error
import urllib.request


def error_code(url: str) -> int | None:
    """The HTTP error status of a GET (None if it succeeded); the response is closed either way."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return None
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code

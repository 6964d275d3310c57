"""Access control shared by REST and gRPC: bearer-token authentication and rate limits.

Both are off by default. Tokens come from settings or a file (one per line); comparison is
constant-time. Rate limits are token buckets per client: the token when authentication is on,
else the peer address.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from pathlib import Path

from service.errors import RateLimited, Unauthenticated

_MAX_CLIENTS = 10_000  # buckets kept; the least recently seen client is forgotten first


def load_tokens(tokens: list[str], token_file: Path | None) -> list[str]:
    """Tokens from settings plus those in `token_file` (blank lines and # comments skipped)."""
    found = [t for t in tokens if t]
    if token_file is not None:
        lines = Path(token_file).read_text().splitlines()
        found += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    return found


class Authenticator:
    """Checks `Authorization: Bearer <token>` values; disabled when there are no tokens."""

    def __init__(self, tokens: list[str]):
        self._tokens = [t.encode() for t in tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, authorization: str | None) -> str | None:
        """Return the client's token (None when disabled); raise Unauthenticated otherwise."""
        if not self._tokens:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode()
        # Compare against every token, so timing reveals neither which nor how much matched.
        matched = False
        for known in self._tokens:
            matched |= hmac.compare_digest(given, known)
        if scheme.lower() != "bearer" or not matched:
            raise Unauthenticated("Missing or invalid bearer token")
        return given.decode()


class RateLimiter:
    """Token buckets: `rate` requests per second per client with bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, client: str) -> None:
        """Take one token for `client`, or raise RateLimited with the wait until the next."""
        if not self.enabled:
            return
        now = self._clock()
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            raise RateLimited(
                f"Rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded; "
                f"retry in {wait:.2f} s", retry_after=max(wait, 1e-3),
            )
        self._buckets[client] = (tokens - 1.0, now)
        while len(self._buckets) > _MAX_CLIENTS:
            self._buckets.popitem(last=False)


class Access:
    """Authentication then rate limiting, for one request from `peer`."""

    def __init__(self, auth: Authenticator, limiter: RateLimiter):
        self.auth, self.limiter = auth, limiter

    def admit(self, authorization: str | None, peer: str) -> None:
        token = self.auth.check(authorization)
        self.limiter.check(f"token:{token}" if token is not None else f"peer:{peer}")


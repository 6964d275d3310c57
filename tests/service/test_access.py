import pytest

from service.access import Authenticator, RateLimiter, load_tokens
from service.errors import Overloaded, RateLimited, Unauthenticated
from service.settings import Settings

from .conftest import MODEL_NAME, RunningServer, free_port, jpeg_bytes


def test_authenticator():
    auth = Authenticator(["alpha", "beta"])
    assert auth.enabled
    assert auth.check("Bearer beta") == "beta"
    assert auth.check("bearer alpha") == "alpha"
    for bad in (None, "", "Bearer", "Bearer gamma", "Basic alpha", "alpha", "Bearer alph"):
        with pytest.raises(Unauthenticated, match="bearer token"):
            auth.check(bad)
    off = Authenticator([])
    assert not off.enabled and off.check(None) is None


def test_load_tokens(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# ops\nalpha\n\n  beta  \n")
    assert load_tokens(["gamma", ""], f) == ["gamma", "alpha", "beta"]
    assert load_tokens([], None) == []


def test_rate_limiter_token_bucket():
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(RateLimited) as info:
        limiter.check("a")
    assert info.value.retry_after == pytest.approx(0.5)
    limiter.check("b")  # other clients have their own bucket
    now[0] += 0.5
    limiter.check("a")  # one token back after 1 / rate seconds
    with pytest.raises(RateLimited):
        limiter.check("a")
    now[0] += 100
    for _ in range(3):  # refills up to the burst, not beyond
        limiter.check("a")
    with pytest.raises(RateLimited):
        limiter.check("a")
    RateLimiter(0, 1).check("x")  # disabled


def test_retry_after_rounds_up():
    assert Overloaded("", retry_after=0.01).retry_after_header() == "1"
    assert Overloaded("", retry_after=1.2).retry_after_header() == "2"


@pytest.fixture(scope="module")
def guarded(model_repository):
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), auth_tokens=["s3cret"], rate_limit_rps=0.5,
                        rate_limit_burst=2)
    with RunningServer(settings) as running:
        yield running


def test_rest_requires_a_token_and_limits_rate(guarded):
    import httpx

    with httpx.Client(base_url=guarded.url, timeout=60) as client:
        r = client.get("/v1/model")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"] == {"code": "unauthenticated",
                                     "message": "Missing or invalid bearer token"}
        bad = client.get("/v1/model", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        # Health and metrics stay open to orchestrators and scrapers.
        assert client.get("/health/ready").status_code == 200
        assert client.get("/metrics").status_code == 200
        auth = {"Authorization": "Bearer s3cret"}
        assert client.get("/v1/model", headers=auth).status_code == 200
        ok = client.post("/v1/predict", content=jpeg_bytes(),
                         headers={**auth, "Content-Type": "image/jpeg"})
        assert ok.status_code == 200, ok.text
        limited = client.get("/v1/model", headers=auth)  # burst of 2 used up
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1

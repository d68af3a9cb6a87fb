"""Label Studio auth for raw requests: legacy tokens, personal access tokens (exchange, expiry, one retry on a
refusal), thread safety, and the key never leaving Label Studio's origin. Real loopback servers."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from detector_al.label_studio.auth import LEGACY, PAT, LabelStudioAuth, label_studio_auth, same_origin, token_kind
from detector_al.label_studio.client import LabelStudioClient, LabelStudioError
from tests.loopback import FakeLabelStudio, Loopback, make_jwt


@pytest.fixture
def fake():
    with FakeLabelStudio() as ls:
        ls.files["/data/upload/1/a.jpg"] = b"\xff\xd8\xffimage"
        yield ls


def session(auth) -> requests.Session:
    s = requests.Session()
    s.auth = auth
    return s


def test_token_kinds_and_origins():
    assert token_kind(make_jwt(token_type="refresh", exp=2**31)) == PAT
    assert token_kind("0123456789abcdef0123456789abcdef01234567") == LEGACY
    assert token_kind("detector-al-demo-token") == LEGACY
    assert same_origin("http://LS:80/a", "http://ls/b") and same_origin("https://ls/x", "https://ls:443")
    assert not same_origin("http://ls:8080", "http://ls:8081") and not same_origin("http://ls", "https://ls")
    assert not same_origin("http://ls.evil.com", "http://ls") and not same_origin(None, "http://ls")


def test_a_legacy_token_goes_as_token_and_only_to_label_studio():
    auth = LabelStudioAuth("http://127.0.0.1:8080", "legacy-key")
    r = auth(requests.Request("GET", "http://127.0.0.1:8080/api/projects").prepare())
    assert r.headers["Authorization"] == "Token legacy-key"
    for foreign in ("http://127.0.0.1:8081/x.jpg", "https://127.0.0.1:8080/x", "http://example.com/x.jpg"):
        r = requests.Request("GET", foreign, headers={"Authorization": "Token legacy-key"}).prepare()
        assert "Authorization" not in auth(r).headers, foreign


def test_a_pat_is_exchanged_once_and_sent_as_bearer(fake):
    auth = LabelStudioAuth(fake.url, fake.pat)
    s = session(auth)
    for _ in range(3):
        assert s.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5).status_code == 200
    assert fake.refreshes == 1 and auth.refreshes == 1
    sent = [h["Authorization"] for m, p, h in fake.http.log if m == "GET"]
    assert len(set(sent)) == 1 and sent[0].startswith("Bearer ") and fake.pat not in sent[0]
    assert fake.http.paths("POST") == ["/api/token/refresh/"]


def test_an_access_token_is_refreshed_before_it_expires(fake):
    fake.access_lifetime = 2  # refreshed a fifth of its life early: after 1.6 s
    s = session(LabelStudioAuth(fake.url, fake.pat))
    assert s.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5).ok
    time.sleep(1.7)
    assert s.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5).ok
    assert fake.refreshes == 2
    assert len(fake.http.paths("GET")) == 2  # no refused request: the refresh came first


def test_a_refused_access_token_is_refreshed_once_and_the_request_retried(fake):
    auth = LabelStudioAuth(fake.url, fake.pat)
    s = session(auth)
    assert s.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5).ok
    fake.revoke_access_tokens()
    r = s.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5)
    assert r.status_code == 200 and r.content == b"\xff\xd8\xffimage"
    assert [x.status_code for x in r.history] == [401]
    assert fake.refreshes == 2

    auth._access = "garbage"  # a token the server never issued
    assert s.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5).ok
    assert fake.refreshes == 3


def test_a_refusal_is_retried_only_once(fake):
    fake.routes["/always-401"] = lambda req: req.json(401, {"detail": "no"})
    s = session(LabelStudioAuth(fake.url, fake.pat))
    r = s.get(f"{fake.url}/always-401", timeout=5)
    assert r.status_code == 401 and len(r.history) == 1
    assert fake.http.paths("GET") == ["/always-401", "/always-401"]


def test_concurrent_refusals_cause_one_refresh(fake):
    auth = LabelStudioAuth(fake.url, fake.pat)
    s = session(auth)
    assert s.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5).ok
    fake.revoke_access_tokens()
    barrier = threading.Barrier(8)
    codes = []

    def worker():
        barrier.wait()
        codes.append(requests.get(f"{fake.url}/data/upload/1/a.jpg", auth=auth, timeout=10).status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 8
    assert fake.refreshes == 2


def test_a_refused_or_expired_pat_says_what_to_do(fake):
    fake.pat_revoked = True
    s = session(LabelStudioAuth(fake.url, fake.pat))
    with pytest.raises(LabelStudioError, match=r"refused this personal access token .*Account & Settings"):
        s.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5)
    expired = make_jwt(token_type="refresh", exp=int(time.time()) - 60)
    with pytest.raises(LabelStudioError, match="expired on"):
        LabelStudioAuth(fake.url, expired)


def test_an_unreachable_label_studio_is_a_clear_error():
    with Loopback(lambda req: None) as dead:
        url = dead.url
    s = session(LabelStudioAuth(url, make_jwt(token_type="refresh", exp=2**31)))
    with pytest.raises(LabelStudioError, match="cannot reach Label Studio"):
        s.get(f"{url}/api/projects", timeout=2)


def test_the_key_never_reaches_another_host_even_through_a_redirect(fake):
    with Loopback(lambda req: req.send(200, b"elsewhere")) as foreign:
        fake.routes["/redirect"] = lambda req: req.send(303, b"", {"Location": f"{foreign.url}/presigned.jpg"})
        for token in (fake.pat, "legacy-key"):
            fake.legacy_on = True
            s = session(LabelStudioAuth(fake.url, token))
            assert s.get(f"{fake.url}/redirect", timeout=5).content == b"elsewhere"
            assert s.get(f"{foreign.url}/direct.jpg", timeout=5).ok
        assert foreign.paths() == ["/presigned.jpg", "/direct.jpg"] * 2
        assert all("Authorization" not in h for _, _, h in foreign.log)


def test_label_studio_auth_is_shared_per_label_studio_and_token(fake):
    a = label_studio_auth(fake.url, fake.pat)
    assert label_studio_auth(fake.url + "/", fake.pat) is a
    assert label_studio_auth(fake.url, "other") is not a


def test_the_client_has_an_authenticated_session_and_check_names_the_token_kind(fake):
    client = LabelStudioClient(fake.url, fake.pat)
    assert client.auth.kind == PAT and client.http.auth is client.auth
    assert client.http.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5).ok
    client.check()
    fake.revoke_access_tokens()  # SDK calls too get a new access token and one retry on a 401
    client.check()
    assert len([p for _, p, _ in fake.http.log if p.startswith("/api/projects")]) == 3

    legacy = LabelStudioClient(fake.url, "legacy-key")  # legacy tokens off, as on a stock install
    with pytest.raises(LabelStudioError, match=r"refused the API key .*legacy tokens are off by default since 1.20"):
        legacy.check()
    fake.legacy_on = True
    legacy.check()
    assert legacy.http.get(f"{fake.url}/data/upload/1/a.jpg", timeout=5).ok

    fake.pat_revoked = True
    with pytest.raises(LabelStudioError, match="personal access token"):
        LabelStudioClient(fake.url, make_jwt(token_type="refresh", exp=2**31, jti="other")).check()

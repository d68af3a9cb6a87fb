"""Private addresses are refused where the connection is made: a name that answers a public address first and a
private one next (DNS rebinding) never reaches the private host; and Label Studio's host is trusted (fetched on a
private address) only when the operator named it (LABEL_STUDIO_URL) or /setup needs basic auth."""

from __future__ import annotations

import ipaddress
import socket
from http.server import ThreadingHTTPServer
from threading import Thread

import pytest
from fastapi.testclient import TestClient

from detector_al.io.fetch.task_image import ImageFetchError, fetch_image
from ml_backend.main import create_app
from ml_backend.settings import Settings
from tests.loopback import FakeLabelStudio, Request

JPEG = b"\xff\xd8\xff\xe0" + b"0" * 2000
PUBLIC_STAND_IN = "127.0.0.2"  # a loopback address this test counts as public (nothing else on loopback is)
REBINDING = "rebinding.example"


def _serve(host: str, port: int, route) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), Request)
    server.daemon_threads = True
    server.route, server.log = route, []
    Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def rebinding(monkeypatch):
    """``rebinding.example``: resolves to the "public" server first, to a private one on the same port afterwards.
    The public one redirects to another path of the same host and closes the connection, so the next hop connects
    (and resolves) again."""
    private = _serve("127.0.0.1", 0, lambda req: req.send(200, JPEG, {"Content-Type": "image/jpeg"}))
    port = private.server_address[1]
    public = _serve(
        PUBLIC_STAND_IN, port, lambda req: req.send(302, b"", {"Location": "/next.jpg", "Connection": "close"})
    )
    answers = iter([PUBLIC_STAND_IN])
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == REBINDING:
            return real(next(answers, "127.0.0.1"), *args, **kwargs)
        return real(host, *args, **kwargs)

    def counts_as(name):
        real_property = getattr(ipaddress.IPv4Address, name)
        return property(lambda ip: str(ip) != PUBLIC_STAND_IN and real_property.fget(ip))

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in ("is_private", "is_loopback"):
        monkeypatch.setattr(ipaddress.IPv4Address, name, counts_as(name))
    yield f"http://{REBINDING}:{port}/first.jpg", public, private
    for server in (public, private):
        server.shutdown()
        server.server_close()


def test_a_name_that_rebinds_to_a_private_address_is_refused_and_never_connected_to(rebinding, tmp_path):
    url, public, private = rebinding
    with pytest.raises(ImageFetchError, match=rf"refused: {REBINDING} is a private or loopback address \(127.0.0.1\)"):
        fetch_image(url, cache_dir=tmp_path)
    assert [p for _, p, _ in public.log] == ["/first.jpg"]  # the checked address was the one connected to
    assert private.log == []  # the private one never saw a request


UPLOAD = "/data/upload/1/a.jpg"


@pytest.mark.parametrize("basic_auth", [False, True], ids=["no-auth", "basic-auth"])
def test_a_setup_hostname_is_trusted_only_behind_basic_auth(basic_auth, tmp_path, trained_weights, sample_data):
    """Without LABEL_STUDIO_URL, /setup names Label Studio. Without basic auth anyone who reaches the port can send
    /setup, so its host is not trusted: on a private address it is refused like any task URL (here: loopback)."""
    auth = ("u", "p") if basic_auth else None
    settings = {"basic_auth_user": "u", "basic_auth_pass": "p"} if basic_auth else {}
    label_config = (sample_data / "label_config.xml").read_text()
    with FakeLabelStudio() as ls:
        ls.legacy_on = True
        ls.files[UPLOAD] = next((sample_data / "images" / "pool").glob("*.jpg")).read_bytes()
        app = create_app(Settings(model_dir=tmp_path / "models", model_path=str(trained_weights), **settings))
        with TestClient(app) as c:
            c.auth = auth
            setup = {"project": "1.1", "schema": label_config, "hostname": ls.url, "access_token": ls.legacy}
            assert c.post("/setup", json=setup).status_code == 200
            task = {"id": 1, "data": {"image": UPLOAD}}
            r = c.post("/predict", json={"tasks": [task], "project": "1.1", "label_config": label_config})
            assert r.status_code == 200, r.text
            error = c.app.state.backend.store.predictions(1)[0]["error"]
        fetched = [p for _, p, _ in ls.http.log if "upload" in p]
    if basic_auth:
        assert error is None and fetched
    else:
        assert "private or loopback address" in error and "LABEL_STUDIO_URL" in error and "BASIC_AUTH" in error
        assert fetched == []

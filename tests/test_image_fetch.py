"""Fetching task images: every source, timeouts, size caps, cut connections, no partial files, no leaked key.

Real loopback HTTP servers in threads: one that never answers, one that trickles, one that sends a huge
body, one that drops the connection half-way, one that answers 401.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path

import pytest

from detector_al.io.fetch.task_image import FetchLimits, fetch_image
from detector_al.label_studio.client import ImageFetchError
from tests.loopback import FakeLabelStudio, Loopback, Request

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40  # 10 kB that look like a JPEG
# the loopback servers below stand in for hosts on the internet: private addresses are allowed (their refusal, the
# default, is tested at the end)
OPEN = FetchLimits(allow_private=True)
FAST = FetchLimits(
    connect_timeout_s=1.0, read_timeout_s=0.5, total_timeout_s=1.5, max_bytes=1_000_000, allow_private=True
)
SLACK_S = 2.5
"""Room above a deadline for a loaded CI machine: the servers below would hold a fetch 10-20 s, so a fetch that ends
within its deadline plus this slack was cut at the deadline, not by the server."""


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.exists() else []


@pytest.fixture
def fake():
    with FakeLabelStudio() as ls:
        ls.files["/data/upload/1/a.jpg"] = JPEG
        yield ls


def test_a_server_that_never_answers_fails_within_the_timeout_and_leaves_nothing(tmp_path):
    release = threading.Event()
    with Loopback(lambda req: release.wait(10)) as hung:
        t = time.monotonic()
        with pytest.raises(ImageFetchError, match=rf"cannot fetch {hung.url}/a.jpg: timed out: no data for 0.5 s"):
            fetch_image(f"{hung.url}/a.jpg", cache_dir=tmp_path / "cache", limits=FAST)
        assert time.monotonic() - t < 0.5 + SLACK_S  # the server would hold it 10 s
        release.set()
    assert cache_files(tmp_path / "cache") == []


def test_a_trickling_server_cannot_hold_a_download_beyond_the_total_deadline(tmp_path):
    def trickle(req: Request) -> None:
        req.send_response(200)
        req.send_header("Content-Length", "100000")
        req.end_headers()
        for _ in range(200):  # a byte every 0.1 s: never a read timeout, never done
            req.wfile.write(b"x")
            req.wfile.flush()
            time.sleep(0.1)

    with Loopback(trickle) as slow:
        t = time.monotonic()
        with pytest.raises(ImageFetchError, match=r"took longer than 1.5 s \(FETCH_TIMEOUT_S\)"):
            fetch_image(f"{slow.url}/slow.jpg", cache_dir=tmp_path, limits=FAST)
        assert time.monotonic() - t < 1.5 + SLACK_S  # the server would trickle for 20 s
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize("announced", [True, False])
def test_a_huge_body_is_refused_at_the_cap(tmp_path, announced):
    size = 5_000_000

    def huge(req: Request) -> None:
        req.send_response(200)
        if announced:
            req.send_header("Content-Length", str(size))
        else:
            req.send_header("Connection", "close")  # the body ends when the connection does
        req.end_headers()
        chunk = b"\0" * 65536
        for _ in range(size // len(chunk)):
            req.wfile.write(chunk)

    with Loopback(huge) as big, pytest.raises(ImageFetchError, match=r"too large.*more than 1 MB \(FETCH_MAX_BYTES\)"):
        fetch_image(f"{big.url}/huge.jpg", cache_dir=tmp_path, limits=FAST)
    assert cache_files(tmp_path) == []


def test_a_cut_download_leaves_no_file_and_the_next_request_fetches_again(tmp_path):
    cut = {"on": True}

    def flaky(req: Request) -> None:
        if cut["on"]:
            req.send_response(200)
            req.send_header("Content-Length", str(len(JPEG)))
            req.end_headers()
            req.wfile.write(JPEG[: len(JPEG) // 2])
            req.wfile.flush()
            req.close_connection = True
            req.connection.shutdown(2)
            return
        req.send(200, JPEG)

    with Loopback(flaky) as srv:
        url = f"{srv.url}/img/a.jpg"
        with pytest.raises(ImageFetchError, match=r"broke after .* bytes \(incomplete download\)"):
            fetch_image(url, cache_dir=tmp_path, limits=FAST)
        assert cache_files(tmp_path) == []
        cut["on"] = False
        path = fetch_image(url, cache_dir=tmp_path, limits=FAST)
        assert path.read_bytes() == JPEG and path.parent == tmp_path and path.suffix == ".jpg"
        assert fetch_image(url, cache_dir=tmp_path, limits=FAST) == path  # cached: no third request
        assert len(srv.paths()) == 2
    assert cache_files(tmp_path) == [path]


def test_401_names_the_token_kind_and_what_to_do(fake, tmp_path):
    with pytest.raises(ImageFetchError, match=r"401 unauthorized: .*legacy tokens are off by default since 1.20"):
        fetch_image("/data/upload/1/a.jpg", ls_url=fake.url, token="legacy-key", task_id=1, cache_dir=tmp_path)
    fake.pat_revoked = True
    with pytest.raises(ImageFetchError, match=r"cannot fetch /data/upload/1/a.jpg: .*refused this personal access"):
        fetch_image("/data/upload/1/a.jpg", ls_url=fake.url, token=fake.pat, task_id=1, cache_dir=tmp_path)
    assert cache_files(tmp_path) == []


def test_uploads_work_with_a_pat_through_the_legacy_path_when_storage_data_refuses(fake, tmp_path):
    """A stock Label Studio answers 400 at /storage-data/uploaded/ (USE_NGINX_FOR_UPLOADS): once per server."""
    fake.routes["/storage-data/uploaded/"] = lambda req: req.json(400, {"detail": "NGINX mode"})
    fake.files["/data/upload/1/b.png"] = b"\x89PNG" + JPEG
    a = fetch_image(
        "/data/upload/1/a.jpg", ls_url=fake.url, token=fake.pat, task_id=1, cache_dir=tmp_path / "new" / "cache"
    )
    b = fetch_image("upload/1/b.png", ls_url=fake.url, token=fake.pat, task_id=2, cache_dir=tmp_path / "new" / "cache")
    assert a.read_bytes() == JPEG and b.read_bytes() == b"\x89PNG" + JPEG
    assert fake.http.paths("GET") == [
        "/storage-data/uploaded/?filepath=upload/1/a.jpg",
        "/data/upload/1/a.jpg",
        "/data/upload/1/b.png",
    ]


def test_uploads_are_read_through_storage_data_when_label_studio_serves_them(fake, tmp_path):
    fake.files["/storage-data/uploaded/?filepath=upload/1/c.jpg"] = JPEG
    path = fetch_image("/data/upload/1/c.jpg", ls_url=fake.url, token=fake.pat, task_id=1, cache_dir=tmp_path)
    assert path.read_bytes() == JPEG
    assert fake.http.paths("GET") == ["/storage-data/uploaded/?filepath=upload/1/c.jpg"]


def test_a_missing_file_is_a_404(fake, tmp_path):
    with pytest.raises(ImageFetchError, match="404 not found in Label Studio"):
        fetch_image(
            "/data/local-files/?d=pool/none.jpg", ls_url=fake.url, token=fake.pat, task_id=1, cache_dir=tmp_path
        )


def test_local_files_are_read_from_a_shared_root_else_from_label_studio(fake, tmp_path):
    root = tmp_path / "root"
    (root / "pool").mkdir(parents=True)
    (root / "pool" / "x.jpg").write_bytes(JPEG)
    url = "/data/local-files/?d=pool/x.jpg"
    assert fetch_image(url, ls_url=fake.url, token=fake.pat, task_id=1, local_root=root, cache_dir=tmp_path / "c") == (
        root / "pool" / "x.jpg"
    )
    assert fake.http.log == []  # read from disk
    fake.files[url] = JPEG
    got = fetch_image(url, ls_url=fake.url, token=fake.pat, task_id=1, local_root=None, cache_dir=tmp_path / "c")
    assert got.read_bytes() == JPEG and got.parent == tmp_path / "c"
    with pytest.raises(ImageFetchError, match="outside LOCAL_FILES_DOCUMENT_ROOT"):
        fetch_image(
            "/data/local-files/?d=../../etc/passwd", ls_url=fake.url, token=fake.pat, task_id=1, local_root=root
        )


def test_local_paths_are_read_only_under_the_local_files_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    inside = root / "a.jpg"
    inside.write_bytes(JPEG)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(JPEG)
    (root / "link.jpg").symlink_to(outside)
    assert fetch_image(str(inside), local_root=root) == inside.resolve()
    assert fetch_image(inside.as_uri(), local_root=root) == inside.resolve()
    assert fetch_image("a.jpg", local_root=root) == inside.resolve()
    for value in (str(outside), outside.as_uri(), str(root / "link.jpg"), str(root / ".." / "secret.jpg")):
        with pytest.raises(ImageFetchError, match="refused: outside LOCAL_FILES_DOCUMENT_ROOT"):
            fetch_image(value, local_root=root)
    with pytest.raises(ImageFetchError, match="LOCAL_FILES_DOCUMENT_ROOT, and it is not set"):
        fetch_image(str(inside))
    with pytest.raises(ImageFetchError, match="no such file"):
        fetch_image(str(root / "missing.jpg"), local_root=root)


def test_the_key_is_sent_to_label_studio_only(fake, tmp_path):
    fake.legacy_on = True
    with Loopback(lambda req: req.send(200, JPEG)) as foreign:
        # a plain URL on another host (same 127.0.0.1, another port: another origin)
        fetch_image(
            f"{foreign.url}/pic.jpg", ls_url=fake.url, token=fake.pat, task_id=1, cache_dir=tmp_path, limits=OPEN
        )
        fetch_image(
            f"{foreign.url}/pic2.jpg", ls_url=fake.url, token="legacy-key", task_id=1, cache_dir=tmp_path, limits=OPEN
        )
        # a cloud URI: Label Studio answers its presign endpoint with a redirect to the cloud
        uri = "s3://bucket/dir/photo.jpg"
        fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
        fake.routes["/tasks/7/presign/"] = lambda req: (
            req.send(303, b"", {"Location": f"{foreign.url}/bucket/photo.jpg?X-Amz-Signature=s"})
            if fake.authorized(req) and req.path.endswith(f"fileuri={fileuri}")
            else req.json(401, {})
        )
        got = fetch_image(uri, ls_url=fake.url, token=fake.pat, task_id=7, cache_dir=tmp_path, limits=OPEN)
        assert got.read_bytes() == JPEG and got.name.endswith("photo.jpg")
        assert foreign.paths() == ["/pic.jpg", "/pic2.jpg", "/bucket/photo.jpg?X-Amz-Signature=s"]
        assert all("Authorization" not in h for _, _, h in foreign.log)
        assert fake.http.paths("GET") == [f"/tasks/7/presign/?fileuri={fileuri}"]
    with pytest.raises(ImageFetchError, match="task has no id"):
        fetch_image(uri, ls_url=fake.url, token=fake.pat, task_id=None, cache_dir=tmp_path)


def test_an_absolute_url_on_label_studio_gets_the_key(fake, tmp_path):
    fake.files["/data/local-files/?d=pool/y.jpg"] = JPEG
    got = fetch_image(
        f"{fake.url}/data/local-files/?d=pool/y.jpg", ls_url=fake.url, token=fake.pat, task_id=1, cache_dir=tmp_path
    )
    assert got.read_bytes() == JPEG


def test_label_studio_files_need_the_url_and_a_key(tmp_path):
    with pytest.raises(ImageFetchError, match="Label Studio URL is unknown"):
        fetch_image("/data/upload/1/a.jpg", ls_url=None, token=None, task_id=1, cache_dir=tmp_path)
    with pytest.raises(ImageFetchError, match="no Label Studio API key"):
        fetch_image("/data/upload/1/a.jpg", ls_url="http://127.0.0.1:9", token=None, task_id=1, cache_dir=tmp_path)


def test_concurrent_first_requests_for_one_url_download_it_once_and_never_see_a_partial_file(tmp_path):
    def slow(req: Request) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(len(JPEG)))
        req.end_headers()
        half = len(JPEG) // 2
        req.wfile.write(JPEG[:half])
        req.wfile.flush()
        time.sleep(0.3)
        req.wfile.write(JPEG[half:])

    with Loopback(slow) as srv:
        barrier = threading.Barrier(6)
        got: list[bytes] = []

        def worker():
            barrier.wait()
            got.append(fetch_image(f"{srv.url}/same.jpg", cache_dir=tmp_path, limits=OPEN).read_bytes())

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == [JPEG] * 6
        assert srv.paths() == ["/same.jpg"]
    assert [p.name for p in cache_files(tmp_path) if p.name.startswith(".part")] == []


def test_a_hung_url_does_not_hold_the_others(tmp_path):
    """Four fetch threads, one URL that never answers: the others are served while it hangs, and it fails at its
    read deadline. Order, not seconds: the hung one's server holds it until the test lets go, so the four must be done
    while it is still pending (a 3 s read timeout leaves a loaded CI machine room), and it then fails by itself."""
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()
    limits = FetchLimits(
        connect_timeout_s=3.0, read_timeout_s=3.0, total_timeout_s=6.0, max_bytes=1_000_000, allow_private=True
    )

    def route(req: Request) -> None:
        if req.path == "/hung.jpg":
            release.wait(30)
            return
        req.send(200, JPEG)

    with Loopback(route) as srv, ThreadPoolExecutor(4) as pool:
        try:
            futures = {
                name: pool.submit(fetch_image, f"{srv.url}/{name}", cache_dir=tmp_path, limits=limits)
                for name in ("hung.jpg", "a.jpg", "b.jpg", "c.jpg", "d.jpg")
            }
            for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
                assert futures[name].result().read_bytes() == JPEG
            assert not futures["hung.jpg"].done()
            with pytest.raises(ImageFetchError, match="timed out: no data for 3 s"):
                futures["hung.jpg"].result(timeout=20)
        finally:
            release.set()


def test_a_name_without_an_image_suffix_gets_one_from_the_content(tmp_path):
    with Loopback(lambda req: req.send(200, JPEG)) as srv:
        path = fetch_image(f"{srv.url}/render?id=3", cache_dir=tmp_path, limits=OPEN)
        assert path.suffix == ".jpg" and path.read_bytes() == JPEG
        assert fetch_image(f"{srv.url}/render?id=3", cache_dir=tmp_path, limits=OPEN) == path
        assert len(srv.paths()) == 1
    assert not any(os.fspath(p).endswith(".part") for p in cache_files(tmp_path))


# ---- safe defaults: private addresses, a bounded cache ------------------------------------------------------


def test_private_and_loopback_urls_are_refused_by_default_but_label_studio_itself_is_fetched(fake, tmp_path):
    """As Label Studio's SSRF protection: a task URL on a loopback or private address is refused, also when a public
    URL redirects there; Label Studio's own host (here on loopback) is fetched; FETCH_ALLOW_PRIVATE allows the rest."""
    with Loopback(lambda req: req.send(200, JPEG)) as inner:
        for url in (f"{inner.url}/a.jpg", "http://10.0.0.1/b.jpg", "http://[::1]:9/c.jpg", "http://169.254.169.254/"):
            with pytest.raises(ImageFetchError, match="private or loopback address"):
                fetch_image(url, ls_url=fake.url, token=fake.pat, task_id=1, cache_dir=tmp_path)
        assert inner.paths() == []  # refused before any request
        fake.routes["/tasks/3/presign/"] = lambda req: req.send(302, b"", {"Location": f"{inner.url}/meta"})
        uri = "s3://bucket/x.jpg"
        with pytest.raises(ImageFetchError, match="private or loopback address"):  # Label Studio's redirect: refused
            fetch_image(uri, ls_url=fake.url, token=fake.pat, task_id=3, cache_dir=tmp_path)
        assert inner.paths() == []
        assert fetch_image(f"{inner.url}/a.jpg", cache_dir=tmp_path, limits=OPEN).read_bytes() == JPEG
    fake.files["/data/upload/1/z.jpg"] = JPEG
    assert fetch_image("/data/upload/1/z.jpg", ls_url=fake.url, token=fake.pat, task_id=1, cache_dir=tmp_path)


def test_the_image_cache_keeps_to_its_cap_least_recently_used_first(tmp_path):
    from detector_al.io.fetch.cache import note_download

    cache = tmp_path / "cache"
    cache.mkdir()
    for i in range(10):
        p = cache / f"d{i}__img{i}.jpg"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (1000 + i, 1000 + i))  # img0 least recently used
    os.utime(cache / "d0__img0.jpg", (5000, 5000))  # ... until a cache hit renews it
    (cache / ".part-unfinished").write_bytes(b"x" * 5000)  # not an image of the cache: never counted or evicted
    new = cache / "d10__img10.jpg"
    new.write_bytes(b"x" * 1000)
    assert note_download(cache, new, max_bytes=20_000) == 0  # under the cap: nothing scanned twice, nothing removed
    assert note_download(cache, new, max_bytes=20_000) == 0
    removed = note_download(cache, new, max_bytes=6_000)
    left = sorted(p.name for p in cache.iterdir())
    assert removed == 6 and len(left) == 6  # 11 kB -> at most 90 % of 6 kB: 5 images, and the part file
    assert {"d0__img0.jpg", "d10__img10.jpg", ".part-unfinished"} <= set(left)  # renewed, and the new one


def test_pinned_images_are_not_evicted_until_released(tmp_path):
    """A request or a job pins the images it still needs: past the cap the cache evicts the others, never those."""
    from detector_al.io.fetch.cache import Pins, pinned

    cache = tmp_path / "cache"
    limits = FetchLimits(allow_private=True, cache_max_bytes=15_000)  # room for one 10 kB image
    with Loopback(lambda req: req.send(200, JPEG)) as server:
        with Pins() as pins:
            held = [fetch_image(f"{server.url}/{i}.jpg", cache_dir=cache, limits=limits, pins=pins) for i in range(3)]
            assert all(p.read_bytes() == JPEG for p in held) and len(pins) == 3 and pinned() == 3
            again = fetch_image(f"{server.url}/0.jpg", cache_dir=cache, limits=limits, pins=pins)  # a hit, pinned too
            assert again == held[0]
        assert pinned() == 0
        fresh = fetch_image(f"{server.url}/new.jpg", cache_dir=cache, limits=limits)  # unpinned: the cap holds again
    assert fresh.exists() and [p for p in held if p.exists()] == []


def test_a_download_is_pinned_before_another_threads_eviction_can_take_it(tmp_path, monkeypatch):
    """Two requests fill a cache that holds one image: the other request's eviction runs right after this file
    lands in the cache (the race a loaded machine gives: rename, then someone else's ``note_download``). The file
    is pinned before it exists, so it survives and the request gets it (before: "evicted it at once")."""
    from detector_al.io.fetch import cache as cache_mod
    from detector_al.io.fetch.cache import Pins
    from detector_al.io.fetch.download import Downloader

    cache = tmp_path / "cache"
    cache.mkdir()
    other = cache / ("0" * 20 + "__other.jpg")
    other.write_bytes(b"x" * 500)
    real_get = Downloader.get

    def get_then_another_thread_evicts(self, url, auth, cache_dir, final_name):
        got = real_get(self, url, auth, cache_dir, final_name)
        os.utime(got, (0, 0))  # the least recently used file: the first an eviction takes
        cache_mod.note_download(cache_dir, other, 1)  # another request's download, over a 1-byte cap
        return got

    monkeypatch.setattr(Downloader, "get", get_then_another_thread_evicts)
    limits = FetchLimits(allow_private=True, cache_max_bytes=1, connect_timeout_s=2, read_timeout_s=2)
    with Loopback(lambda req: req.send(200, b"jpeg-bytes" * 50)) as srv, Pins() as pins:
        path = fetch_image(f"{srv.url}/a.jpg", cache_dir=cache, limits=limits, pins=pins)
        assert path.read_bytes() == b"jpeg-bytes" * 50

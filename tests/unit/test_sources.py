"""Where export files come from: names, local discovery, hashing streams, pickling, and S3."""

from __future__ import annotations

import gzip
import hashlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from km2pg.errors import SourceError
from km2pg.sources import (
    ContentStream,
    ExportFile,
    content_md5,
    discover,
    discover_local,
    discover_s3,
    export_key,
    is_export_name,
    is_revision_key,
    parse_s3_url,
    s3_key_from_event,
    s3_object,
)

CONTENT = b'{"_p":"a","_t":1400000000,"_n":"x"}\n{"_p":"b","_t":1400000001}\n' * 50


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def write(path: Path, data: bytes = CONTENT, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def one_line(error: pytest.ExceptionInfo[SourceError]) -> str:
    message = str(error.value)
    assert message
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("revisions/22770.json", ("revisions/22770.json", 22770)),
        ("s3prefix/x/revisions/5.json.gz", ("revisions/5.json", 5)),
        ("/data/export/revisions/5.json", ("revisions/5.json", 5)),
        ("revisions/007.json", ("revisions/7.json", 7)),
        ("other.json", ("other.json", 0)),
        ("a/b/other.json.gz", ("other.json", 0)),
        ("a/myrevisions/5.json", ("5.json", 0)),
        ("revisions/5.jsonl", ("5.jsonl", 0)),
        ("revisions/x5.json", ("x5.json", 0)),
        ("index.csv", ("index.csv", 0)),
    ],
)
def test_export_key(path: str, key: tuple[str, int]) -> None:
    assert export_key(path) == key


@pytest.mark.parametrize(
    ("name", "loadable"),
    [
        ("revisions/1.json", True),
        ("revisions/1.json.gz", True),
        ("other.json", True),
        ("bucket/prefix/index.csv", False),
        ("index.csv", False),
        ("status.csv", False),
        ("revisions/1.json.bak", False),
        ("revisions/1.txt", False),
        ("revisions/", False),
    ],
)
def test_is_export_name(name: str, loadable: bool) -> None:
    assert is_export_name(name) is loadable


def test_is_revision_key() -> None:
    assert is_revision_key("p/revisions/3.json")
    assert is_revision_key("revisions/3.json.gz")
    assert not is_revision_key("p/other.json")
    assert not is_revision_key("index.csv")


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    with pytest.raises(SourceError, match="not an S3 URL"):
        parse_s3_url("s3:///prefix")


def test_s3_key_from_event_is_url_decoded() -> None:
    assert s3_key_from_event("my+export/revisions/1.json%3F") == "my export/revisions/1.json?"


def test_export_file_properties() -> None:
    f = ExportFile(source="s3://b", path="p/revisions/12.json.gz", etag="0" * 32)
    assert f.export_key == "revisions/12.json"
    assert f.revision == 12
    assert f.gzipped
    assert f.known_md5 is None  # the ETag of a gzip object is not the content's MD5
    assert f.label == "s3://b/p/revisions/12.json.gz"
    local = ExportFile(source="/d", path="/d/revisions/1.json", local=True)
    assert local.label == "/d/revisions/1.json"
    assert local.known_md5 is None


@pytest.mark.parametrize(
    ("etag", "known"),
    [
        ("0123456789abcdef0123456789abcdef", True),
        ("0123456789abcdef0123456789abcdef-3", False),  # multipart upload
        ("0123456789ABCDEF0123456789ABCDEF", False),
        ("", False),
        (None, False),
    ],
)
def test_known_md5_only_for_a_plain_single_part_etag(etag: str | None, known: bool) -> None:
    f = ExportFile(source="s3://b", path="revisions/1.json", etag=etag)
    assert (f.known_md5 == etag) if known else f.known_md5 is None


# ---------------------------------------------------------------------------------------------
# Local files


def test_discover_local_walks_a_folder_tree_in_revision_order(tmp_path: Path) -> None:
    write(tmp_path / "revisions" / "10.json")
    write(tmp_path / "revisions" / "9.json.gz", gz=True)
    write(tmp_path / "revisions" / "100.json")
    write(tmp_path / "nested" / "deeper" / "revisions" / "11.json")
    write(tmp_path / "index.csv", b"filename\n")
    write(tmp_path / "status.csv", b"x\n")
    write(tmp_path / "notes.txt", b"x\n")
    write(tmp_path / "misc" / "other.json")
    found = discover_local(tmp_path)
    assert [(f.revision, Path(f.path).name) for f in found] == [
        (0, "other.json"),
        (9, "9.json.gz"),
        (10, "10.json"),
        (11, "11.json"),
        (100, "100.json"),
    ]
    assert all(f.local for f in found)
    assert all(Path(f.path).is_absolute() for f in found)
    sizes = {Path(f.path).name: f.size for f in found}
    assert sizes["10.json"] == len(CONTENT)
    assert sizes["9.json.gz"] == (tmp_path / "revisions" / "9.json.gz").stat().st_size


def test_discover_local_orders_equal_revisions_by_path(tmp_path: Path) -> None:
    write(tmp_path / "b" / "revisions" / "1.json")
    write(tmp_path / "a" / "revisions" / "1.json")
    found = discover_local(tmp_path)
    assert [Path(f.path).parent.parent.name for f in found] == ["a", "b"]


def test_discover_local_of_one_file(tmp_path: Path) -> None:
    path = write(tmp_path / "revisions" / "5.json")
    (found,) = discover_local(path)
    assert found.path == str(path.resolve())
    assert found.source == str(path.resolve().parent)
    assert found.revision == 5
    assert found.size == len(CONTENT)


def test_discover_local_of_an_empty_folder_finds_nothing(tmp_path: Path) -> None:
    assert discover_local(tmp_path) == []


def test_discover_local_of_a_missing_path_is_a_one_line_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        discover_local(tmp_path / "nope")
    assert "no such file or folder" in one_line(info)
    assert "nope" in str(info.value)


def test_discover_mixes_paths_in_the_given_order(tmp_path: Path) -> None:
    write(tmp_path / "a" / "revisions" / "2.json")
    write(tmp_path / "b" / "revisions" / "1.json")
    found = list(discover([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert [f.revision for f in found] == [2, 1]


@pytest.mark.parametrize("gz", [False, True])
def test_content_stream_md5_is_the_md5_of_the_decompressed_content(
    tmp_path: Path, gz: bool
) -> None:
    name = "revisions/1.json.gz" if gz else "revisions/1.json"
    (file,) = discover_local(write(tmp_path / name, gz=gz))
    with ContentStream(file) as content:
        data = content.stream.read()
        assert data == CONTENT
        assert content.md5 == md5(CONTENT)
        assert content.bytes_read == len(CONTENT)
    assert content_md5(file) == md5(CONTENT)


def test_content_stream_reads_lines_and_hashes_as_it_goes(tmp_path: Path) -> None:
    big = b"".join(b'{"_p":"%d","_t":1400000000}\n' % i for i in range(100_000))
    (file,) = discover_local(write(tmp_path / "revisions" / "1.json.gz", big, gz=True))
    with ContentStream(file) as content:
        count = sum(1 for _ in iter(content.stream.readline, b""))
        assert count == 100_000
        assert content.md5 == md5(big)


def test_content_md5_of_an_empty_file(tmp_path: Path) -> None:
    (file,) = discover_local(write(tmp_path / "revisions" / "1.json", b""))
    assert content_md5(file) == md5(b"")


def test_content_md5_of_a_damaged_gzip_is_a_one_line_source_error(tmp_path: Path) -> None:
    data = gzip.compress(CONTENT)[:-20]
    (file,) = discover_local(write(tmp_path / "revisions" / "1.json.gz", data))
    with pytest.raises(SourceError) as info:
        content_md5(file)
    assert "cannot read" in one_line(info)


def test_content_md5_of_a_file_that_is_not_gzip_is_a_source_error(tmp_path: Path) -> None:
    (file,) = discover_local(write(tmp_path / "revisions" / "1.json.gz", CONTENT))
    with pytest.raises(SourceError) as info:
        content_md5(file)
    assert "cannot read" in one_line(info)


def test_opening_a_vanished_local_file_is_a_source_error(tmp_path: Path) -> None:
    path = write(tmp_path / "revisions" / "1.json")
    (file,) = discover_local(path)
    path.unlink()
    with pytest.raises(SourceError) as info:
        ContentStream(file)
    assert "cannot read" in one_line(info)


# ---------------------------------------------------------------------------------------------
# Pickling


def test_export_file_pickles() -> None:
    f = ExportFile(source="/d", path="/d/revisions/3.json", size=5, etag=None, local=True)
    again = pickle.loads(pickle.dumps(f))
    assert again == f
    assert again.revision == 3


def test_export_file_pickles_without_its_client() -> None:
    class Unpicklable:
        def __reduce__(self) -> Any:
            raise TypeError("clients cannot be pickled")

    client = Unpicklable()
    f = s3_object(client, "bucket", "p/revisions/3.json", 10, '"' + "a" * 32 + '"')
    assert f.client is client
    again = pickle.loads(pickle.dumps(f))
    assert again.client is None
    assert again == f  # the client takes no part in equality
    assert (again.source, again.path, again.size, again.etag) == (
        "s3://bucket",
        "p/revisions/3.json",
        10,
        "a" * 32,
    )
    assert f.client is client  # the original keeps its client


# ---------------------------------------------------------------------------------------------
# S3 (moto)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="km-export")
        yield client


def put(client: Any, key: str, data: bytes = CONTENT) -> None:
    client.put_object(Bucket="km-export", Key=key, Body=data)


def test_discover_s3_lists_export_files_under_a_prefix_in_revision_order(s3: Any) -> None:
    for key in (
        "site/revisions/10.json",
        "site/revisions/9.json",
        "site/revisions/100.json.gz",
        "site/index.csv",
        "site/status.csv",
        "site/readme.txt",
        "other-site/revisions/1.json",
    ):
        put(s3, key, b"x" * (len(key)))
    found = discover_s3("s3://km-export/site/", client=s3)
    assert [f.path for f in found] == [
        "site/revisions/9.json",
        "site/revisions/10.json",
        "site/revisions/100.json.gz",
    ]
    for f in found:
        head = s3.head_object(Bucket="km-export", Key=f.path)
        assert f.etag == head["ETag"].strip('"')
        assert f.size == len(f.path)
        assert f.source == "s3://km-export"
        assert not f.local
        assert f.client is s3


def test_discover_s3_makes_its_own_client_when_none_is_given(s3: Any) -> None:
    put(s3, "revisions/1.json")
    (found,) = discover_s3("s3://km-export")
    assert found.path == "revisions/1.json"
    assert content_md5(ExportFile(source=found.source, path=found.path)) == md5(CONTENT)


def test_discover_s3_pages_through_many_objects(s3: Any) -> None:
    for n in range(1, 1101):
        put(s3, f"revisions/{n}.json", b"x")
    found = discover_s3("s3://km-export/revisions/", client=s3)
    assert [f.revision for f in found] == list(range(1, 1101))


def test_discover_s3_with_nothing_to_load_is_a_one_line_source_error(s3: Any) -> None:
    put(s3, "site/index.csv", b"x")
    with pytest.raises(SourceError) as info:
        discover_s3("s3://km-export/site/", client=s3)
    assert "no export files" in one_line(info)


def test_discover_s3_of_a_missing_bucket_is_a_one_line_source_error(s3: Any) -> None:
    with pytest.raises(SourceError) as info:
        discover_s3("s3://no-such-bucket/x", client=s3)
    assert "NoSuchBucket" in one_line(info)


@pytest.mark.parametrize("gz", [False, True])
def test_streaming_an_s3_object_gives_its_content(s3: Any, gz: bool) -> None:
    key = "revisions/7.json.gz" if gz else "revisions/7.json"
    put(s3, key, gzip.compress(CONTENT) if gz else CONTENT)
    (found,) = discover_s3("s3://km-export/revisions/", client=s3)
    with ContentStream(found) as content:
        assert content.stream.read() == CONTENT
        assert content.md5 == md5(CONTENT)
    raw = found.open_raw()
    try:
        assert raw.read() == (s3.get_object(Bucket="km-export", Key=key)["Body"].read())
    finally:
        raw.close()


def test_a_plain_single_part_upload_has_a_known_md5_equal_to_its_etag(s3: Any) -> None:
    put(s3, "revisions/1.json")
    put(s3, "revisions/2.json.gz", gzip.compress(CONTENT))
    plain, gz = discover_s3("s3://km-export", client=s3)
    assert plain.known_md5 == plain.etag == md5(CONTENT)
    assert content_md5(plain) == plain.known_md5
    assert gz.known_md5 is None
    assert content_md5(gz) == md5(CONTENT)


def test_a_missing_s3_object_is_a_one_line_source_error(s3: Any) -> None:
    f = s3_object(s3, "km-export", "revisions/404.json")
    with pytest.raises(SourceError) as info:
        ContentStream(f)
    message = one_line(info)
    assert message == "cannot read s3://km-export/revisions/404.json: NoSuchKey"
    with pytest.raises(SourceError):
        content_md5(f)


def test_discover_routes_s3_urls_and_local_paths(s3: Any, tmp_path: Path) -> None:
    put(s3, "revisions/3.json")
    write(tmp_path / "revisions" / "1.json")
    found = list(discover(["s3://km-export/revisions/", str(tmp_path)], s3))
    assert [(f.local, f.revision) for f in found] == [(False, 3), (True, 1)]

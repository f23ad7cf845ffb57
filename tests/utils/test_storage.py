"""Storage locations: a path stays a Path, a URI is an ObjectPath on a real S3 API (moto's server)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pyarrow.fs
import pytest

from ofasearch.config import parse_spec
from ofasearch.errors import SpecError
from ofasearch.results.tables import TRIAL_COLUMNS, read_rows, write_table
from ofasearch.utils.claims import create_exclusive
from ofasearch.utils.files import atomic_write
from ofasearch.utils.storage import (
    ObjectPath,
    as_location,
    is_uri,
    location_digest,
    ray_storage,
    redact_uri,
    uri_problem,
)
from tests.helpers.specs import SPEC


@pytest.fixture
def prefix(s3_bucket: str) -> ObjectPath:
    """A fresh prefix in the session's bucket."""
    location = as_location(f"{s3_bucket}/{uuid.uuid4().hex[:8]}")
    assert isinstance(location, ObjectPath)
    return location


def test_paths_stay_paths_and_uris_become_object_paths(tmp_path, s3_bucket):
    assert as_location(str(tmp_path)) == tmp_path
    assert as_location(f"file://{tmp_path}") == tmp_path
    remote = as_location(f"{s3_bucket}/a/b/")
    assert isinstance(remote, ObjectPath)
    assert str(remote) == f"{s3_bucket}/a/b"
    assert str(remote / "c.yaml") == f"{s3_bucket}/a/b/c.yaml"
    assert (remote / "c.yaml").name == "c.yaml"
    assert remote.parent == as_location(f"{s3_bucket}/a")
    assert is_uri(remote)
    assert is_uri("gs://x/y")
    assert not is_uri(tmp_path)
    assert ray_storage(tmp_path) == (str(tmp_path), None)
    path, fs = ray_storage(remote)
    assert path == "ofasearch-test/a/b"
    assert isinstance(fs, pyarrow.fs.S3FileSystem)


def test_the_endpoint_comes_from_aws_endpoint_url(prefix, monkeypatch):
    """pyarrow alone ignores AWS_ENDPOINT_URL (it would ask AWS); ours reaches the loopback server."""
    (prefix / "x.txt").write_text("hello")
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)  # the S3-only variable
    assert as_location(str(prefix / "x.txt")).read_text() == "hello"


def test_object_path_reads_writes_and_lists_like_a_path(prefix):
    folder = prefix / "run"
    assert not folder.exists()
    assert not (folder / "spec.yaml").is_file()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "state.json", '{"phase": "search"}')
    assert (folder / "state.json").read_text() == '{"phase": "search"}'
    assert folder.is_dir()
    assert folder.exists()
    assert (folder / "state.json").is_file()
    data = b"\x00weights" * 1000
    atomic_write(folder / "w.bin", data)
    assert location_digest(folder / "w.bin") == hashlib.sha256(data).hexdigest()
    (folder / "w.bin").unlink()
    assert not (folder / "w.bin").exists()
    (folder / "w.bin").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="w.bin"):
        (folder / "w.bin").read_bytes()


def test_a_name_is_claimed_once(prefix):
    assert create_exclusive(prefix / "spec.yaml", "first")
    assert not create_exclusive(prefix / "spec.yaml", "second")
    assert (prefix / "spec.yaml").read_text() == "first"


def test_tables_round_trip_through_s3(prefix):
    rows = [{"trial_id": "a", "role": "search", "val_acc": 0.5, "distill.eps": 1.2}]
    write_table(rows, TRIAL_COLUMNS, prefix / "trials.parquet")
    back = read_rows(prefix / "trials.parquet")
    assert back[0]["trial_id"] == "a"
    assert back[0]["distill.eps"] == 1.2
    assert set(TRIAL_COLUMNS) <= set(back[0])
    assert read_rows(prefix / "missing.parquet") == []


def test_spec_storage_accepts_uris_and_names_bad_ones(tmp_path):
    spec = parse_spec({**SPEC, "storage": "s3://bucket/results"}, "spec.yaml", check_models=False).resolve_paths(
        tmp_path
    )
    assert spec.storage == "s3://bucket/results"  # not made a path under the spec's folder
    assert parse_spec({**SPEC, "storage": "rel"}, "spec.yaml", check_models=False).resolve_paths(
        tmp_path
    ).storage == str(tmp_path / "rel")
    with pytest.raises(SpecError) as err:
        parse_spec({**SPEC, "storage": "ftp://host/x"}, "spec.yaml", check_models=False)
    assert "storage: 'ftp://host/x': unknown URI scheme 'ftp'; allowed: a path, file://, s3://" in err.value.problems[0]
    assert uri_problem("s3:///nobucket") == "'s3:///nobucket': no bucket (or host) after s3://"
    assert uri_problem(str(Path("/a/b"))) is None


@pytest.mark.parametrize(
    ("uri", "written"),
    [
        ("s3://AKIA:s3cr3t@bucket/x", "s3://***@bucket/x"),
        ("https://user:s3cr3t@host:5000/path?x=1", "https://***@host:5000/path?x=1"),
        (
            "s3://bucket/x?access_key=AKIA&secret_key=s3cr3t&region=eu",
            "s3://bucket/x?access_key=***&secret_key=***&region=eu",
        ),
        ("s3://bucket/x", "s3://bucket/x"),
        ("/tmp/results", "/tmp/results"),
        ("s3://***@bucket/x", "s3://***@bucket/x"),
    ],
)
def test_credentials_are_redacted_from_what_is_written(uri, written):
    assert redact_uri(uri) == written
    assert "s3cr3t" not in redact_uri(uri)
    assert "AKIA" not in redact_uri(uri)


def test_a_uri_with_credentials_is_used_and_a_redacted_one_takes_them_from_the_environment(prefix):
    """The run uses the credentials the URI holds; spec.yaml run again holds ``***`` instead,
    and the AWS_* variables (moto's here) stand in, as for any S3 URI without credentials."""
    bucket_path = str(prefix).removeprefix("s3://")
    given = as_location(f"s3://AKIA:secret@{bucket_path}")
    (given / "x.txt").write_text("hello")
    assert "secret" not in str(given)
    assert str(given) == str(prefix)
    redacted = redact_uri(f"s3://AKIA:secret@{bucket_path}")
    assert as_location(redacted) == prefix
    assert (as_location(redacted) / "x.txt").read_text() == "hello"

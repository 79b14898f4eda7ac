import hashlib

import pytest

from misato import hashing, weights
from misato.cli import main
from misato.errors import MisatoError


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    """A registry entry whose 'official' file is a few bytes we control."""
    payload = b"pretend weights"
    entry = weights.WeightEntry(
        name="fake-net",
        filename="fake-net-abc.pth",
        url="https://example.invalid/fake-net-abc.pth",
        sha256=hashlib.sha256(payload).hexdigest()[:8],
        description="test entry",
        preprocessing="none",
    )
    monkeypatch.setitem(weights.REGISTRY, entry.name, entry)
    monkeypatch.setenv("MISATO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    return entry, payload


def test_found_in_weights_dir_and_verified(tmp_path, fake_entry):
    entry, payload = fake_entry
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / entry.filename).write_bytes(payload)
    found = weights.resolve(entry.name, weights_dir=tmp_path / "w")
    assert found.origin == "official" and found.sha256 == hashlib.sha256(payload).hexdigest()


def test_torch_hub_cache_is_searched(tmp_path, fake_entry):
    entry, payload = fake_entry
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / entry.filename).write_bytes(payload)
    assert weights.resolve(entry.name).path == hub / entry.filename


def test_hash_mismatch_is_an_error(tmp_path, fake_entry):
    entry, _ = fake_entry
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / entry.filename).write_bytes(b"something else")
    with pytest.raises(MisatoError, match="does not match the official"):
        weights.resolve(entry.name, weights_dir=tmp_path / "w")


def test_explicit_path_is_trusted(tmp_path, fake_entry):
    entry, _ = fake_entry
    (tmp_path / "mine.pth").write_bytes(b"anything")
    found = weights.resolve(entry.name, path=tmp_path / "mine.pth")
    assert found.origin == "explicit"
    with pytest.raises(MisatoError, match="not found"):
        weights.resolve(entry.name, path=tmp_path / "missing.pth")


def test_offline_missing_names_file_folders_and_url(fake_entry):
    entry, _ = fake_entry
    with pytest.raises(MisatoError) as error:
        weights.resolve(entry.name)
    message = str(error.value)
    assert entry.filename in message and entry.url in message and "offline" in message


def test_lpips_linear_layers_come_from_the_installed_wheel(fake_entry):
    found = weights.resolve("lpips-alex-v0.1")
    assert found.origin == "package" and found.path.name == "alex.pth"


def test_unknown_name():
    with pytest.raises(MisatoError, match="known:"):
        weights.get_entry("nope")


def test_cli_list_and_verify(tmp_path, fake_entry, capsys):
    entry, payload = fake_entry
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "fake-net" in out and "missing" in out and "lpips-alex-v0.1" in out
    assert f"- (from {entry.url})" in next(line for line in out.splitlines() if line.startswith("fake-net "))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / entry.filename).write_bytes(b"corrupt")
    assert main(["weights", "verify", "fake-net", "--weights-dir", str(tmp_path / "w")]) == 2


@pytest.mark.parametrize("action", ["list", "verify"])
def test_a_missing_folder_to_search_is_named_before_any_row_is_printed(tmp_path, capsys, monkeypatch, action):
    assert main(["weights", action, "--weights-dir", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"--weights-dir {tmp_path / 'nowhere'} does not exist" in captured.err
    monkeypatch.setenv("MISATO_WEIGHTS_DIR", str(tmp_path / "nowhere"))
    assert main(["weights", action]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"$MISATO_WEIGHTS_DIR {tmp_path / 'nowhere'} does not exist" in captured.err


def test_download_verifies_the_hash_and_writes_atomically(tmp_path, fake_entry, monkeypatch):
    """The download route, fed from a file:// URL (tests never reach the network)."""
    entry, payload = fake_entry
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / entry.filename).write_bytes(payload)
    good = weights.WeightEntry(**{**entry.__dict__, "url": (tmp_path / "server" / entry.filename).as_uri()})
    with pytest.raises(MisatoError, match="downloads are off"):  # offline: no attempt at all, even file://
        weights.download(good, tmp_path / "dest" / entry.filename)
    assert not (tmp_path / "dest").exists()
    for name in weights.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    found = weights.download(good, tmp_path / "dest" / entry.filename)
    assert found.origin == "downloaded" and found.path.read_bytes() == payload
    bad = weights.WeightEntry(**{**good.__dict__, "sha256": "00000000"})
    with pytest.raises(MisatoError, match="not the expected one"):
        weights.download(bad, tmp_path / "dest2" / entry.filename)
    assert list((tmp_path / "dest2").iterdir()) == []  # nothing half-written is left behind
    missing = weights.WeightEntry(**{**good.__dict__, "url": (tmp_path / "nowhere.pth").as_uri()})
    with pytest.raises(MisatoError, match="download failed"):
        weights.download(missing, tmp_path / "dest3" / entry.filename)


def test_large_file_digests_are_remembered_across_runs(tmp_path, fake_entry, monkeypatch):
    import builtins

    big = tmp_path / "big.pth"
    big.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    expected = hashlib.sha256(big.read_bytes()).hexdigest()
    assert weights.file_sha256(big) == expected
    assert (tmp_path / "cache" / hashing.HASH_MEMO_NAME).is_file()
    monkeypatch.setattr(hashing, "_HASH_CACHE", {})  # a new process: only the on-disk memo is left
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: (_ for _ in ()).throw(AssertionError("re-read"))
                        if str(p) == str(big) else real_open(p, *a, **k))
    assert weights.file_sha256(big) == expected  # answered from the memo, without reading the file
    monkeypatch.setattr(builtins, "open", real_open)
    big.write_bytes(b"x" * (2 << 20))  # changed content, new modification time: hashed again
    assert weights.file_sha256(big) == hashlib.sha256(b"x" * (2 << 20)).hexdigest()
    (tmp_path / "cache" / hashing.HASH_MEMO_NAME).write_text("not json")
    monkeypatch.setattr(hashing, "_HASH_CACHE", {})
    assert weights.file_sha256(big) == hashlib.sha256(b"x" * (2 << 20)).hexdigest()  # damaged memo ignored


def test_docs_list_every_registry_entry_and_its_digest_kind():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "weights.md").read_text()
    kinds = ("full sha256", "8-hex prefix only", "md5 only", "none published")
    for entry in weights.REGISTRY.values():
        assert f"| `{entry.name}` | `{entry.filename}` |" in text, entry.name
        assert len(entry.sha256) in (0, 8, 64) and len(entry.md5) in (0, 32)
        assert int(entry.sha256 or entry.md5 or "0", 16) >= 0
        stated = [line.split("|")[2].strip() for line in text.splitlines()
                  if line.startswith("|") and f"`{entry.name}`" in line.split("|")[1]]
        assert [kind for kind in stated if kind in kinds] == [entry.digest_kind], entry.name


def test_md5_only_entries_are_checked_and_unverifiable_files_never_downloaded(tmp_path, monkeypatch):
    payload = b"torchscript bytes"
    entry = weights.WeightEntry("md5-probe", "probe.pt", "file:///nowhere/probe.pt", "", "probe", "none",
                                md5=hashlib.md5(payload).hexdigest())
    (tmp_path / "probe.pt").write_bytes(payload)
    assert weights.find_local(entry, tmp_path).origin == "official"
    (tmp_path / "probe.pt").write_bytes(b"something else")
    found = hashlib.md5(b"something else").hexdigest()
    with pytest.raises(MisatoError, match=rf"md5 {found} does not match .*\(expected md5 {entry.md5}\)"):
        weights.find_local(entry, tmp_path)  # the found and the expected digest of the same kind
    source = tmp_path / "served.pt"
    source.write_bytes(payload)
    unverifiable = weights.WeightEntry("none-probe", "none.pt", source.as_uri(), "", "probe", "none")
    assert unverifiable.digest_kind == "none published"
    for name in weights.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MisatoError, match="never downloaded automatically"):
        weights.download(unverifiable, tmp_path / "out" / "none.pt")
    assert not (tmp_path / "out" / "none.pt").exists()
    assert main(["weights", "fetch"]) == 2  # names or --all: never every multi-GB file by accident




def test_a_file_that_cannot_be_downloaded_is_asked_for_in_the_folders_searched(tmp_path, monkeypatch):
    """The no-digest and failed-download routes list $MISATO_WEIGHTS_DIR (or --weights-dir) as where to put it,
    not the torch-hub folder a download would have written to."""
    unverifiable = weights.WeightEntry("none-probe", "none.pt", "file:///nowhere/none.pt", "", "probe", "none")
    monkeypatch.setitem(weights.REGISTRY, unverifiable.name, unverifiable)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in weights.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "env-weights"))
    with pytest.raises(MisatoError, match="never downloaded") as from_env:
        weights.resolve("none-probe")
    assert str(tmp_path / "env-weights") in str(from_env.value)
    with pytest.raises(MisatoError, match="never downloaded") as from_flag:
        weights.resolve("none-probe", weights_dir=tmp_path / "flag-weights")
    assert str(tmp_path / "flag-weights") in str(from_flag.value)
    assert str(tmp_path / "env-weights") not in str(from_flag.value)


def test_fetch_into_a_weights_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "weights").write_text("not a folder")
    monkeypatch.setenv("MISATO_CACHE", str(tmp_path))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    assert main(["weights", "fetch", "big-lama-torchscript"]) == 2
    err = capsys.readouterr().err
    assert err == (f"misato weights fetch: error: the weights cache {tmp_path / 'weights'} is a file, not a folder; "
                   "move it, or give --weights-dir\n")
    assert (tmp_path / "weights").read_text() == "not a folder"

"""What travels when local files go into the lab container: a dataset's own links as files, nothing from outside."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from labctl.container import tar_of


def test_a_link_inside_the_folder_goes_as_a_file_and_one_leading_out_stays_home(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the lab\n")
    data = tmp_path / "mydata"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "b.jpg").write_bytes(b"jpeg bytes")
    (data / "cat" / "b.jpg").chmod(0o640)
    (data / "cat" / "rel.jpg").symlink_to("b.jpg")
    (data / "cat" / "up.jpg").symlink_to(os.path.relpath(outside, data / "cat"))
    (data / "cat" / "abs.txt").symlink_to(outside)
    (data / "cat" / "dangling.jpg").symlink_to("nowhere.jpg")
    skipped: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(tar_of({"data": data}, skipped=skipped))) as tar:
        files = {m.name: m for m in tar if m.isfile()}
        assert sorted(files) == ["data/cat/b.jpg", "data/cat/rel.jpg"]
        assert (tar.extractfile(files["data/cat/rel.jpg"]) or io.BytesIO()).read() == b"jpeg bytes"
        assert files["data/cat/rel.jpg"].mode == 0o640 and files["data/cat/rel.jpg"].uname == "root"
        assert not [m for m in tar if m.issym() or m.islnk()]
    assert sorted(Path(p).name for p in skipped) == ["abs.txt", "dangling.jpg", "up.jpg"]

"""`open --browser` hands the browser a private redirect page, never the tokenized URL on its command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labctl.workflows.reach import lab_url, redirect_page

TOKEN = "f" * 64

# A stand-in browser (the BROWSER variable Python's webbrowser module honours): it records its command line
# and what the file it was given holds, as a browser would read it.
CAPTURE = """
import json, os, stat, sys
from urllib.parse import urlparse
from urllib.request import url2pathname
arg = sys.argv[2]
path = url2pathname(urlparse(arg).path)
info = {"argv": sys.argv[2:], "path": path, "text": open(path, encoding="utf-8").read(),
        "mode": stat.S_IMODE(os.stat(path).st_mode)}
json.dump(info, open(sys.argv[1], "w"))
"""

RUN = """
import sys
from labctl.ui import PlainReporter
from labctl.workflows.reach import browse
with browse(sys.argv[1], True, PlainReporter(sys.stderr)) as page:
    print(page, flush=True)
    assert page.exists()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_the_browser_gets_a_0600_page_that_is_gone_afterwards(tmp_path: Path) -> None:
    capture, seen = tmp_path / "capture.py", tmp_path / "seen.json"
    capture.write_text(CAPTURE)
    env = dict(os.environ, BROWSER=f"{sys.executable} {capture} {seen} %s", TMPDIR=str(tmp_path))
    url = lab_url(18888, TOKEN)
    done = subprocess.run([sys.executable, "-c", RUN, url], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    info = json.loads(seen.read_text())
    assert not any(TOKEN in arg for arg in info["argv"])  # the token is not on any command line
    assert info["mode"] == 0o600 and info["path"].endswith(".html")
    assert 'http-equiv="refresh"' in info["text"] and f'content="0;url={url}"' in info["text"]
    assert not Path(info["path"]).exists()  # removed when the tunnel (here: the block) ends
    assert done.stdout.strip() == info["path"]


def test_the_url_is_escaped_in_the_page() -> None:
    page = redirect_page('http://127.0.0.1:1/lab?token=a"><script>&x=1')
    assert "<script>" not in page and "&quot;&gt;&lt;script&gt;&amp;x=1" in page

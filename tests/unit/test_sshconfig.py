"""The SSH config entry labctl writes: its lines, its files' modes, its checks, and the Include line."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from labctl import sshconfig
from labctl.errors import NotReady, UsageError
from labctl.keys import generate_ed25519
from labctl.sshconfig import HostEntry, IncludeState, config_path, known_hosts_path

KEY = generate_ed25519("host").public_line


def _entry(**changes: object) -> HostEntry:
    values: dict[str, object] = {
        "lab": "cifar-gpu",
        "host": "203.0.113.7",
        "port": 22,
        "user": "azureuser",
        "identity_file": Path("/home/me/.local/state/labctl/keys/cifar-gpu/id_ed25519"),
        "host_key": KEY,
        "jupyter_port": 8888,
        "local_port": 8890,
    }
    values.update(changes)
    return HostEntry(**values)  # type: ignore[arg-type]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _user_config() -> Path:
    return Path.home() / ".ssh" / "config"


def _hosts() -> list[str]:
    """The aliases labctl's config resolves, in order."""
    return [line.split()[1] for line in config_path().read_text().splitlines() if line.startswith("Host ")]


def test_block_has_every_line_and_pins_the_key() -> None:
    home = Path.home()
    written = sshconfig.write_entry(_entry())
    text = written.read_text()
    assert "Host labctl-cifar-gpu\n" in text
    for line in (
        "HostName 203.0.113.7",
        "Port 22",
        "User azureuser",
        "IdentityFile /home/me/.local/state/labctl/keys/cifar-gpu/id_ed25519",
        f"UserKnownHostsFile {home}/.ssh/labctl/cifar-gpu.known_hosts",
        "StrictHostKeyChecking yes",
        f"GlobalKnownHostsFile {home}/.ssh/labctl/cifar-gpu.known_hosts",
        "HostKeyAlias labctl-cifar-gpu",
        "LocalForward 127.0.0.1:8890 127.0.0.1:8888",
    ):
        assert f"    {line}\n" in text
    known = known_hosts_path("cifar-gpu").read_text()
    assert known == f"labctl-cifar-gpu {' '.join(KEY.split()[:2])}\n"
    assert _mode(written) == 0o600 and _mode(known_hosts_path("cifar-gpu")) == 0o600
    assert _mode(written.parent) == 0o700


def test_rewriting_replaces_only_that_labs_block_and_removal_leaves_the_others() -> None:
    sshconfig.write_entry(_entry())
    sshconfig.write_entry(_entry(lab="other", host="lab.example.org"))
    sshconfig.write_entry(_entry(host="198.51.100.9"))
    text = config_path().read_text()
    assert "198.51.100.9" in text and "203.0.113.7" not in text
    assert _hosts() == ["labctl-cifar-gpu", "labctl-other"]
    assert sshconfig.remove_entry("cifar-gpu") is True
    assert _hosts() == ["labctl-other"]
    assert not known_hosts_path("cifar-gpu").exists() and known_hosts_path("other").exists()
    assert sshconfig.remove_entry("cifar-gpu") is False
    assert text.startswith(sshconfig.HEADER) and config_path().read_text().startswith(sshconfig.HEADER)
    assert "\n\n\n" not in config_path().read_text()  # rewrites do not pile up blank lines


def test_a_path_with_a_space_is_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "John Smith"
    monkeypatch.setenv("HOME", str(home))
    text = sshconfig.write_entry(_entry(identity_file=home / "key")).read_text()
    assert f'    IdentityFile "{home}/key"\n' in text
    assert f'    UserKnownHostsFile "{home}/.ssh/labctl/cifar-gpu.known_hosts"\n' in text


def test_a_path_in_another_script_is_taken_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "Jürgen Müller"
    monkeypatch.setenv("HOME", str(home))
    text = sshconfig.write_entry(_entry(identity_file=home / "clé")).read_text()
    assert f'    IdentityFile "{home}/clé"\n' in text


def test_the_users_own_config_cannot_add_ways_to_accept_a_host_key(tmp_path: Path) -> None:
    """ssh takes an option's first value: labctl's come first, so a `Host *` of the user's changes none of them."""
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("no ssh client")
    hostile = tmp_path / "config"
    hostile.write_text(
        "Host *\n  KnownHostsCommand /bin/echo %H ssh-ed25519 AAAA\n  VerifyHostKeyDNS yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /tmp/theirs\n  GlobalKnownHostsFile /tmp/theirs\n"
    )
    known = tmp_path / "pinned"
    options = sshconfig.trust(_entry(identity_file=tmp_path / "key"), known)
    argv = [ssh, "-G", "-F", str(hostile), *(f"-o{key}={value}" for key, value in options.items()), "me@lab"]
    effective = dict(line.partition(" ")[::2] for line in subprocess.check_output(argv, text=True).splitlines())
    assert "knownhostscommand" not in effective
    assert effective["verifyhostkeydns"] == "false"
    assert effective["stricthostkeychecking"] == "true"
    assert effective["userknownhostsfile"] == effective["globalknownhostsfile"] == str(known)
    assert known.read_text().split()[0] == effective["hostkeyalias"]


@pytest.mark.parametrize(
    "changes",
    [
        {"lab": "x\nHost *"},
        {"lab": "Evil Lab"},
        {"host": "203.0.113.7\n    ProxyCommand sh -c id"},
        {"host": "a b"},
        {"host": "-oProxyCommand=id"},
        {"user": "me\nProxyCommand id"},
        {"user": "-l"},
        {"user": "a b"},
        {"identity_file": Path("/home/me/%d/key")},
        {"identity_file": Path("/home/${HOME}/key")},
        {"identity_file": Path('/home/me/"key')},
        {"identity_file": Path("/home/me/key\nProxyCommand id")},
        {"identity_file": Path("/home/me/#key")},
        {"identity_file": Path("relative/key")},
        {"identity_file": Path("/home/me/\u2028ProxyCommand id")},  # a line separator to Python's splitlines
        {"identity_file": Path("/home/me/\x85key")},
        {"port": 0},
        {"port": 70000},
        {"local_port": True},
        {"host_key": "ssh-ed25519 not-base64!"},
    ],
)
def test_values_that_could_change_what_ssh_does_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        sshconfig.write_entry(_entry(**changes))
    assert not config_path().exists()


def test_ipv6_and_dns_names_are_accepted() -> None:
    assert "    HostName 2001:db8::7\n" in sshconfig.write_entry(_entry(host="2001:db8::7")).read_text()
    assert "    HostName lab-1.example.org\n" in sshconfig.write_entry(_entry(host="lab-1.example.org")).read_text()


def test_include_goes_to_the_top_after_one_yes_and_is_not_added_twice() -> None:
    _user_config().parent.mkdir()
    _user_config().write_text("Host work\n    User me\n")
    _user_config().chmod(0o644)
    questions: list[str] = []

    def yes(question: str) -> bool:
        questions.append(question)
        return True

    assert sshconfig.ensure_include(yes) is IncludeState.ADDED
    lines = _user_config().read_text().splitlines()
    first = next(ln for ln in lines if ln and not ln.startswith("#"))
    assert first == f"Include {config_path()}"
    assert lines[-2:] == ["Host work", "    User me"]
    assert _mode(_user_config()) == 0o644
    assert sshconfig.ensure_include(yes) is IncludeState.PRESENT
    assert len(questions) == 1


def test_an_include_inside_a_host_block_does_not_count() -> None:
    _user_config().parent.mkdir()
    _user_config().write_text(f"Host work\n    Include {config_path()}\n")
    assert sshconfig.ensure_include(lambda _q: True) is IncludeState.ADDED
    assert _user_config().read_text().count("Include") == 2


def test_a_no_is_remembered_and_nothing_is_written() -> None:
    asked: list[str] = []

    def no(question: str) -> bool:
        asked.append(question)
        return False

    assert sshconfig.ensure_include(no) is IncludeState.DECLINED
    assert not _user_config().exists()
    assert sshconfig.ensure_include(no) is IncludeState.DECLINED
    assert len(asked) == 1
    assert sshconfig.ensure_include(lambda _q: True, ask_again=True) is IncludeState.ADDED
    assert _mode(_user_config()) == 0o600


def test_a_symlinked_config_is_edited_where_it_points(tmp_path: Path) -> None:
    _user_config().parent.mkdir()
    real = tmp_path / "dotfiles-ssh-config"
    real.write_text("Host *\n    ServerAliveInterval 30\n")
    _user_config().symlink_to(real)
    assert sshconfig.ensure_include(lambda _q: True) is IncludeState.ADDED
    assert _user_config().is_symlink()
    assert f"Include {config_path()}" in real.read_text()


def test_the_entry_of_a_record_and_of_a_local_lab() -> None:
    from labctl.state import LabRecord, NodeRecord

    record = LabRecord(
        name="gpu",
        target="azure",
        ssh_key_path="/k/id",
        nodes=[NodeRecord(host="203.0.113.7", user="azureuser", host_key=KEY)],
    )
    record.jupyter_port = 8891
    entry = sshconfig.entry_for(record)
    assert (entry.alias, entry.local_port, entry.jupyter_port, entry.identity_file) == (
        "labctl-gpu",
        8891,
        8891,
        Path("/k/id"),
    )
    with pytest.raises(UsageError, match="this computer"):
        sshconfig.entry_for(LabRecord(name="here", target="local"))
    with pytest.raises(NotReady, match="does not record"):
        sshconfig.entry_for(LabRecord(name="half", target="ssh", nodes=[NodeRecord(host="h.example.org")]))


def test_nothing_is_written_or_remembered_when_no_one_can_answer() -> None:
    assert sshconfig.ensure_include(lambda _q: None) is IncludeState.NOT_ASKED
    assert not _user_config().exists()
    assert sshconfig.ensure_include(lambda _q: True) is IncludeState.ADDED  # asked again: no "no" was kept


def test_a_remote_command_keeps_its_words(tmp_path: Path) -> None:
    import shlex

    from labctl.state import LabRecord, NodeRecord
    from labctl.workflows.reach import ssh_command

    record = LabRecord(
        name="lab",
        target="ssh",
        ssh_key_path="/k",
        nodes=[NodeRecord(host="203.0.113.7", user="me", host_key=KEY)],
    )

    def sent(command: list[str]) -> list[str]:
        full = ssh_command(record, tmp_path / "known_hosts", command)
        return full[full.index("--") + 1 :]  # what ssh reads as the destination and the remote command

    assert sent(["sh", "-c", "exit 7"])[1:] == ["sh -c 'exit 7'"]
    assert shlex.split(sent(["echo", "a b", "$HOME"])[1]) == ["echo", "a b", "$HOME"]
    assert sent(["-oProxyCommand=touch x"])[1:] == ["'-oProxyCommand=touch x'"]  # a word, never an option
    assert sent([]) == [sent(["x"])[0]]  # a shell: the destination alone

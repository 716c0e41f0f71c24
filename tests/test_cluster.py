"""The same search on a real two-node Ray cluster (two `ray start` processes on localhost),
and the shipped cluster configs parse with the fields Ray requires."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from spaces import write_tiny_space

CLUSTER = Path(__file__).parent.parent / "cluster"
RAY = Path(sys.executable).parent / "ray"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_cluster_launcher_configs_pass_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((CLUSTER / name).read_text()))
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("gpu" in node for node in config["available_node_types"] if node != config["head_node_type"])
    assert any('"ray[tune]==2.60.0"' in cmd for cmd in config["setup_commands"]), "pin Ray to the driver's version"
    assert any("tune_tl" in cmd for cmd in config["setup_commands"])


@pytest.mark.parametrize("name", ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "kuberay-rayjob-ddp.yaml"])
def test_kuberay_manifests_name_a_head_a_gpu_worker_group_and_a_pinned_image(name):
    doc = yaml.safe_load((CLUSTER / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayCluster", "RayJob")
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == "2.60.0"
    containers = [spec["headGroupSpec"]["template"]["spec"]["containers"][0]]
    for group in spec["workerGroupSpecs"]:
        containers.append(group["template"]["spec"]["containers"][0])
    assert any("nvidia.com/gpu" in c["resources"]["limits"] for c in containers[1:])
    assert all(not c["image"].endswith(":latest") and ":" in c["image"] for c in containers)
    if doc["kind"] == "RayJob":
        assert doc["spec"]["entrypoint"].startswith("tune-tl search")


def _manifests() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(CLUSTER.glob("*.yaml"))
            if p.name not in ("aws.yaml", "gcp.yaml")}


def _references(node, found: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Every (kind, name) of a claim, secret or config map that a Kubernetes object refers to, at any depth."""
    if isinstance(node, dict):
        if isinstance(node.get("persistentVolumeClaim"), dict):
            found.add(("PersistentVolumeClaim", node["persistentVolumeClaim"]["claimName"]))
        for key, kind, name_key in (("secret", "Secret", "secretName"), ("secretKeyRef", "Secret", "name"),
                                    ("secretRef", "Secret", "name"), ("configMap", "ConfigMap", "name"),
                                    ("configMapKeyRef", "ConfigMap", "name"), ("configMapRef", "ConfigMap", "name")):
            if isinstance(node.get(key), dict) and name_key in node[key]:
                found.add((kind, node[key][name_key]))
        for ref in node.get("imagePullSecrets", []) or []:
            found.add(("Secret", ref["name"]))
        for value in node.values():
            _references(value, found)
    elif isinstance(node, list):
        for value in node:
            _references(value, found)
    return found


def test_every_claim_secret_and_config_map_a_manifest_references_is_shipped_or_documented():
    manifests = _manifests()
    defined = {(d["kind"], d["metadata"]["name"]) for docs in manifests.values() for d in docs}
    readme = (CLUSTER / "README.md").read_text()
    referenced = {(name, ref) for name, docs in manifests.items() for d in docs for ref in _references(d, set())}
    assert ("kuberay-rayjob.yaml", ("PersistentVolumeClaim", "tune-tl-results")) in referenced  # the walker finds them
    missing = [f"{name}: {kind} {ref}" for name, (kind, ref) in sorted(referenced)
               if (kind, ref) not in defined and f"`{ref}`" not in readme]
    assert not missing, f"referenced but neither defined in cluster/ nor documented in cluster/README.md: {missing}"


def test_the_results_claim_is_read_write_many_so_head_and_workers_share_it():
    (claim,) = [d for docs in _manifests().values() for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "tune-tl-results"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storage class" in (CLUSTER / "README.md").read_text().lower()


def test_the_data_parallel_job_asks_for_no_more_gpus_and_cpus_per_trial_than_one_worker_pod_has():
    from tune_tl.cli import _parser

    doc = yaml.safe_load((CLUSTER / "kuberay-rayjob-ddp.yaml").read_text())
    args = _parser().parse_args(doc["spec"]["entrypoint"].split()[1:])
    assert args.workers_per_trial == 2 and args.gpus_per_trial == 2, "a GPU worker group that uses --workers-per-trial"
    limits = [g["template"]["spec"]["containers"][0]["resources"]["limits"] for g in doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    assert any(lim["nvidia.com/gpu"] >= args.gpus_per_trial and float(lim["cpu"]) >= args.cpus_per_trial for lim in limits)
    groups = yaml.safe_load((CLUSTER / "kuberay-raycluster.yaml").read_text())["spec"]["workerGroupSpecs"]
    assert any(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= 2 for g in groups)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A head and a worker node started with `ray start --block` in their own process groups,
    so that stopping them touches no other Ray on the machine (unlike `ray stop`)."""

    def __init__(self, tmp_path):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # `ray start` turns on token authentication; clients must use the token too (~/.ray/auth_token).
        self.env["RAY_AUTH_MODE"] = "token"
        self.procs = []
        self.tmp = tmp_path

    def start(self, *args, name):
        cmd = [str(RAY), "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args]
        with open(self.tmp / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def wait_for_nodes(self, n, timeout=90):
        probe = (
            "import ray, sys, time\n"
            f"ray.init(address='{self.address}', logging_level='ERROR')\n"
            f"end = time.time() + {timeout}\n"
            f"while sum(node['Alive'] for node in ray.nodes()) < {n}:\n"
            "    time.sleep(0.5)\n"
            "    if time.time() > end: sys.exit(1)\n"
        )
        return subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, timeout=timeout + 60).returncode == 0

    def stop(self):
        for proc in self.procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=20)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue


@pytest.mark.slow
@pytest.mark.processes
def test_search_with_address_runs_trials_on_both_nodes_of_a_two_node_cluster(tmp_path):
    if not RAY.exists():
        pytest.skip(f"the `ray` CLI is not installed next to {sys.executable}; cannot start a multi-process cluster")
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start("--head", f"--port={cluster.port}", "--include-dashboard=false", "--resources", json.dumps({"node_a": 1}),
                      name="head")
        if not cluster.wait_for_nodes(1):
            pytest.skip(f"`ray start --head` cannot run here: {(tmp_path / 'head.log').read_text()[-800:]}")
        cluster.start(f"--address={cluster.address}", "--resources", json.dumps({"node_b": 1}), name="worker")
        assert cluster.wait_for_nodes(2), (tmp_path / "worker.log").read_text()[-2000:]

        space = write_tiny_space(tmp_path, seed=1, budget={"samples": 4},
                                 params={"freeze_blocks": "all", "lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}})
        out = tmp_path / "out"
        search = [sys.executable, "-m", "tune_tl.cli", "search", str(space), "--no-probes", "--address", cluster.address,
                  "--output", str(out), "--name", "two-nodes"]
        done = subprocess.run(search, env=cluster.env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

        trials = pd.read_parquet(out / "two-nodes" / "trials")
        epochs = pd.read_parquet(out / "two-nodes" / "epochs")
        assert len(trials) == 4 and set(trials["status"]) == {"completed"}
        assert len(epochs) == 4 and epochs["node_id"].notna().all()
        assert trials["node_id"].nunique() == 2, "each 1-CPU node can hold one trial: both must have run trials"
        assert trials["node_ip"].notna().all()
    finally:
        cluster.stop()

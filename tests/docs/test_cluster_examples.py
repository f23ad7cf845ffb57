"""The cluster guide's KubeRay RayJob and Slurm script: parsed (no scheduler runs here), the
`ofasearch run` each starts read by ofasearch's own parser, and its storage shared by every node."""

import shlex
import subprocess
from pathlib import Path

import yaml

from ofasearch.cli import build_parser

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def _mounts(pod: dict) -> dict[str, str]:
    """{mount path: claim name} of a pod template's first container."""
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
    return {m["mountPath"]: claims[m["name"]] for m in pod["spec"]["containers"][0]["volumeMounts"]}


def test_the_rayjob_runs_a_search_with_storage_every_pod_mounts():
    job = yaml.safe_load((EXAMPLES / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["ofasearch", "run"]
    args = build_parser().parse_args(words[1:])
    assert args.command == "run"
    assert args.spec.endswith(".yaml")
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    mounts = [_mounts(pod) for pod in pods]
    assert all(m == mounts[0] for m in mounts), "head and workers mount the same volume"
    (path,) = mounts[0]
    assert args.storage.startswith(path + "/"), "spec and results on it"
    assert args.spec.startswith(path + "/"), "spec and results on it"
    assert cluster["rayVersion"].split(".")[0] == "2"


def test_the_slurm_script_starts_ray_then_a_search_on_shared_storage():
    script = (EXAMPLES / "slurm.sbatch").read_text()
    assert subprocess.run(["bash", "-n", str(EXAMPLES / "slurm.sbatch")]).returncode == 0, "valid bash"
    lines = script.replace("\\\n", " ").splitlines()
    assert any("ray start --head" in line and line.lstrip().startswith("srun") for line in lines)
    assert any("ray start --address=" in line for line in lines), "every other node joins the head"
    (run,) = [line for line in lines if line.lstrip().startswith("ofasearch run")]
    shared = next(line.split("=", 1)[1] for line in lines if line.startswith("SHARED="))
    words = shlex.split(run.replace("$SHARED", shared).replace('"$head:$port"', "node1:6379"))
    args = build_parser().parse_args(words[1:])
    assert args.command == "run"
    assert args.address == "node1:6379"
    assert args.storage.startswith(shared + "/")
    assert args.spec.startswith(shared + "/")
    assert "#SBATCH --nodes=" in script
    assert "scontrol show hostnames" in script

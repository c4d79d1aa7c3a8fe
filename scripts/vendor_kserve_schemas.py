"""Extract the openAPIV3Schema of KServe's ServingRuntime, ClusterServingRuntime and
InferenceService CRDs into deploy/kserve/schema/kserve-crds.json (the only KServe data this
repository vendors; Apache-2.0, LICENSE beside it).

    python scripts/vendor_kserve_schemas.py <a kserve/kserve checkout> <its commit>
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

CRDS = ("serving.kserve.io_servingruntimes.yaml", "serving.kserve.io_clusterservingruntimes.yaml",
        "serving.kserve.io_inferenceservices.yaml")
OUT = Path(__file__).resolve().parents[1] / "deploy" / "kserve" / "schema" / "kserve-crds.json"


def main(checkout: str, commit: str) -> None:
    schemas = {}
    for name in CRDS:
        crd = yaml.safe_load((Path(checkout) / "config" / "crd" / "full" / name).read_text())
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served") and version.get("storage"):
                schemas[kind] = {"apiVersion": f"{crd['spec']['group']}/{version['name']}",
                                 "openAPIV3Schema": version["schema"]["openAPIV3Schema"]}
    doc = {"source": {"repository": "kserve/kserve", "commit": commit,
                      "files": [f"config/crd/full/{n}" for n in CRDS], "license": "Apache-2.0"},
           "schemas": schemas}
    OUT.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {', '.join(schemas)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

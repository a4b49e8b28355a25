"""Checks what `sam build` produced (scripts/checks/template.sh runs it after the build).

- every function's artifact is one executable `bootstrap` for the template's architecture, that
  needs no newer glibc than provided.al2023 has (2.34);
- the policy layer, packaged the way `sam deploy` packages it (SAM's own make_zip), holds
  latch/policies.yaml with exactly infra/policies.yaml's content.

usage: python infra/checks/built.py BUILD_DIR
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_template_parity import CfnLoader

ROOT = Path(__file__).resolve().parents[2]
AL2023_GLIBC = (2, 34)
ELF_MACHINE = {"x86_64": 0x3E, "arm64": 0xB7}


def main(build_dir: Path) -> None:
    built = yaml.load((build_dir / "template.yaml").read_text(), Loader=CfnLoader)
    arch = built["Globals"]["Function"]["Architectures"][0]
    problems = []
    for name, res in built["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            boot = build_dir / res["Properties"]["CodeUri"] / "bootstrap"
            data = boot.read_bytes()
            if data[:4] != b"\x7fELF" or int.from_bytes(data[18:20], "little") != ELF_MACHINE[arch]:
                problems.append(f"{name}: {boot} is not an {arch} ELF executable")
            if not os.access(boot, os.X_OK):
                problems.append(f"{name}: {boot} is not executable")
            versions = {tuple(map(int, v.split(b"."))) for v in re.findall(rb"GLIBC_(\d+\.\d+)", data)}
            newest = max(versions, default=(0, 0))
            if newest > AL2023_GLIBC:
                problems.append(f"{name}: needs GLIBC_{newest[0]}.{newest[1]}, provided.al2023 has 2.34")
            print(f"    {name}: bootstrap {len(data) / 1e6:.1f} MB, {arch}, needs glibc {newest[0]}.{newest[1]} (al2023: 2.34)")
        elif res["Type"] == "AWS::Serverless::LayerVersion":
            content = build_dir / res["Properties"]["ContentUri"]
            from samcli.lib.package.utils import make_zip

            with tempfile.TemporaryDirectory() as tmp:
                with zipfile.ZipFile(make_zip(os.path.join(tmp, "layer"), str(content))) as z:
                    names = z.namelist()
                    want = (ROOT / "infra" / "policies.yaml").read_bytes()
                    if names != ["latch/policies.yaml"] or z.read("latch/policies.yaml") != want:
                        problems.append(f"{name}: layer zip holds {names}, not infra/policies.yaml")
            print(f"    {name}: layer zip = latch/policies.yaml (infra/policies.yaml)")
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

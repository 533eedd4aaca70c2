#!/usr/bin/env python3
"""Fails when a dependency needs a newer Rust than the workspace's `rust-version` says
(a user with that Rust could not build rearguard). Usage: scripts/check-msrv.py"""
import json, subprocess, sys

meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked"],
                                 check=True, capture_output=True, text=True).stdout)
version = lambda text: tuple(int(part) for part in (text.split(".") + ["0", "0"])[:3])
members = [p for p in meta["packages"] if p["id"] in meta["workspace_members"]]
declared = min(version(p["rust_version"]) for p in members)
dependencies = [p for p in meta["packages"] if p["id"] not in meta["workspace_members"]]
needed = max(dependencies, key=lambda p: version(p.get("rust_version") or "0"))
if version(needed["rust_version"]) > declared:
    sys.exit(f"rust-version {'.'.join(map(str, declared[:2]))} is too old: "
             f"{needed['name']} {needed['version']} needs {needed['rust_version']}")
print(f"rust-version {'.'.join(map(str, declared[:2]))} builds every dependency "
      f"(the newest need: {needed['name']} {needed['rust_version']})")

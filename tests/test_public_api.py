"""The public surface of ``import m2m``: its names, and that it stays light."""

from __future__ import annotations

import subprocess
import sys

import m2m

# The one list to update when the public API grows (keep it sorted).
EXPECTED_ALL = [
    "Client",
    "Collection",
    "GetResult",
    "GrpcClient",
    "Hit",
    "HttpClient",
    "Include",
    "M2MConfig",
    "M2MEngine",
    "Metric",
    "QueryResult",
    "SearchResult",
    "__version__",
    "create_m2m",
    "errors",
]

HEAVY_MODULES = [
    "torch",
    "fastapi",
    "grpc",
    "wgpu",
    "langchain_core",
    "llama_index",
    "faiss",
    "sentence_transformers",
]


def test_all_is_sorted_and_expected():
    assert list(m2m.__all__) == sorted(m2m.__all__)
    assert list(m2m.__all__) == EXPECTED_ALL
    for name in m2m.__all__:
        assert hasattr(m2m, name), name
    assert isinstance(m2m.__version__, str) and m2m.__version__


def test_import_m2m_loads_no_heavy_dependency():
    code = (
        "import sys, m2m\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "loaded = sorted(m for m in heavy if m in sys.modules or any(k.startswith(m + '.') for k in sys.modules))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import m2m imported: {out.stdout.strip()}"

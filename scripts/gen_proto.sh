#!/usr/bin/env bash
# Regenerate the checked-in gRPC stubs from proto/m2m.proto (needs grpcio-tools):
#   scripts/gen_proto.sh            (uses .venv/bin/python, or $PYTHON)
# The generated files import each other absolutely; we rewrite that to a relative
# import so they live inside the m2m.server._generated package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
OUT=src/m2m/server/_generated
"$PYTHON" -m grpc_tools.protoc -Iproto --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" proto/m2m.proto
sed -i 's/^import m2m_pb2 as m2m__pb2$/from . import m2m_pb2 as m2m__pb2/' "$OUT/m2m_pb2_grpc.py"

# Keep `ruff check` / `ruff format --check` green without excluding the folder.
for f in "$OUT"/m2m_pb2.py "$OUT"/m2m_pb2.pyi "$OUT"/m2m_pb2_grpc.py; do
  sed -i '1i # ruff: noqa' "$f"
done
RUFF="${RUFF:-$(dirname "$PYTHON")/ruff}"
if [ -x "$RUFF" ]; then "$RUFF" format -q "$OUT"; fi
echo "regenerated $OUT from proto/m2m.proto"

"""The gRPC server over raw calls: packed vectors, status codes, malformed and oversize messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _servers import running_server

grpc = pytest.importorskip("grpc")

from m2m.server._generated import m2m_pb2 as pb  # noqa: E402

MAX_BODY = 128 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("grpc"), max_body_bytes=MAX_BODY) as srv:
        yield srv


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target, options=[("grpc.max_send_message_length", -1)]) as ch:
        yield ch


def call(channel, method: str, request, response_cls):
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    fn = channel.unary_unary(
        f"/m2m.v1.M2M/{method}", request_serializer=None, response_deserializer=response_cls.FromString
    )
    return fn(raw, timeout=30)


def failure(channel, method: str, request, response_cls=pb.WriteResponse) -> tuple[str, str, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, request, response_cls)
    err = info.value
    return err.code().name, dict(err.trailing_metadata() or ()).get("m2m-error-type"), err.details()


def matrix(array) -> pb.Matrix:
    array = np.ascontiguousarray(array, dtype="<f4")
    return pb.Matrix(shape=list(array.shape), data=array.tobytes())


def test_vectors_travel_as_packed_float32_and_search_is_exact(channel):
    rng = np.random.default_rng(9)
    base = rng.standard_normal((64, 12)).astype(np.float32)
    info = call(
        channel,
        "CreateCollection",
        pb.CreateCollectionRequest(name="g", dim=12, metric="ip"),
        pb.CollectionInfo,
    )
    assert (info.name, info.dim, info.metric, info.count) == ("g", 12, "ip", 0)
    req = pb.WriteRequest(
        collection="g",
        ids=[f"v{i}" for i in range(64)],
        embeddings=matrix(base),
        metadatas_json=json.dumps([{"i": i} for i in range(64)]),
    )
    # The vectors are the raw little-endian float32 bytes: 64*12*4 of them, no per-number encoding.
    assert len(req.embeddings.data) == 64 * 12 * 4
    assert call(channel, "Add", req, pb.WriteResponse).count == 64
    q = rng.standard_normal((3, 12)).astype(np.float32)
    res = call(
        channel,
        "Query",
        pb.QueryRequest(
            collection="g",
            query_embeddings=matrix(q),
            n_results=4,
            include=pb.StringList(values=["distances", "embeddings"]),
        ),
        pb.QueryResponse,
    )
    order = np.argsort(-(q.astype(np.float64) @ base.T.astype(np.float64)), axis=1)[:, :4]
    assert list(res.row_lengths) == [4, 4, 4]
    assert list(res.ids) == [f"v{j}" for row in order for j in row]
    np.testing.assert_allclose(
        np.array(res.distances.values).reshape(3, 4),
        -np.take_along_axis(q @ base.T, order, axis=1),
        rtol=1e-5,
    )
    got = np.frombuffer(res.embeddings.data, dtype="<f4").reshape(list(res.embeddings.shape))
    assert np.array_equal(got, base[order.ravel()])  # bit-exact
    assert not res.HasField("metadatas_json")
    count = call(channel, "Count", pb.CollectionRef(name="g"), pb.CountResponse).count
    assert count == 64


def test_errors_map_to_status_codes_and_change_nothing(channel):
    call(channel, "CreateCollection", pb.CreateCollectionRequest(name="e", dim=3), pb.CollectionInfo)
    call(
        channel,
        "Add",
        pb.WriteRequest(collection="e", ids=["keep"], embeddings=matrix([[1, 2, 3]])),
        pb.WriteResponse,
    )
    cases = [
        (
            "Add",
            pb.WriteRequest(collection="e", ids=["x"], embeddings=matrix([[1, 2]])),
            "INVALID_ARGUMENT",
            "DimensionMismatchError",
        ),
        (
            "Add",
            pb.WriteRequest(collection="e", ids=["x"], embeddings=pb.Matrix(shape=[1, 3], data=b"\0" * 11)),
            "INVALID_ARGUMENT",
            "InvalidVectorError",
        ),
        (
            "Add",
            pb.WriteRequest(collection="e", ids=["x"], embeddings=matrix([[1, np.nan, 3]])),
            "INVALID_ARGUMENT",
            "InvalidVectorError",
        ),
        (
            "Add",
            pb.WriteRequest(collection="e", ids=["keep"], embeddings=matrix([[1, 2, 3]])),
            "ALREADY_EXISTS",
            "IdAlreadyExistsError",
        ),
        (
            "Add",
            pb.WriteRequest(collection="zz", ids=["x"], embeddings=matrix([[1, 2, 3]])),
            "NOT_FOUND",
            "CollectionNotFoundError",
        ),
        (
            "Add",
            pb.WriteRequest(collection="e", ids=["x"], embeddings=matrix([[1, 2, 3]]), metadatas_json="[{"),
            "INVALID_ARGUMENT",
            "InvalidArgumentError",
        ),
        (
            "Update",
            pb.WriteRequest(collection="e", ids=["ghost"], metadatas_json='[{"a": 1}]'),
            "NOT_FOUND",
            "ItemNotFoundError",
        ),
        ("Add", b"\xff\xff\xff\xff garbage", "INVALID_ARGUMENT", "InvalidArgumentError"),
        ("Add", b"\x0a\x05ab", "INVALID_ARGUMENT", "InvalidArgumentError"),  # truncated string field
    ]
    for method, request, code, kind in cases:
        got = failure(channel, method, request)
        assert got[:2] == (code, kind), (method, got)
        assert got[2]
    q = pb.QueryRequest(collection="e", query_embeddings=matrix([[1, 2, 3]]), n_results=-1)
    assert failure(channel, "Query", q, pb.QueryResponse)[:2] == ("INVALID_ARGUMENT", "InvalidArgumentError")
    bad_filter = pb.GetRequest(collection="e", where_json='{"$nope": 1}')
    assert failure(channel, "Get", bad_filter, pb.GetResponse)[:2] == (
        "INVALID_ARGUMENT",
        "InvalidFilterError",
    )
    # Over the message-size limit: grpc itself refuses it before the handler runs.
    big = pb.WriteRequest(
        collection="e",
        ids=["big"],
        embeddings=matrix([[1, 2, 3]]),
        documents_json=json.dumps(["x" * MAX_BODY]),
    )
    assert failure(channel, "Add", big)[0] == "RESOURCE_EXHAUSTED"
    got = call(
        channel,
        "Get",
        pb.GetRequest(collection="e", include=pb.StringList(values=["embeddings"])),
        pb.GetResponse,
    )
    assert list(got.ids) == ["keep"]
    assert np.frombuffer(got.embeddings.data, dtype="<f4").tolist() == [1.0, 2.0, 3.0]


def test_client_reraises_size_limit_as_payload_too_large(server):
    from m2m.clients import GrpcClient
    from m2m.clients._wire import PayloadTooLargeError

    with GrpcClient(server.grpc_target) as client:
        col = client.get_or_create_collection("sized", 4)
        with pytest.raises(PayloadTooLargeError):
            col.add([f"i{i}" for i in range(10000)], np.zeros((10000, 4), dtype=np.float32))
        assert col.count() == 0


def test_grpc_requests_are_in_metrics(server, channel):
    call(channel, "Health", pb.HealthRequest(), pb.HealthResponse)
    text = server.app.state.service.metrics.render({})
    assert 'm2m_requests_total{transport="grpc",method="POST",route="/m2m.v1.M2M/Health",status="OK"}' in text

from node.testing.inprocess import NodeHandle


async def test_put_get_roundtrip(node: NodeHandle, admin: dict[str, str]) -> None:
    r = await node.client.post("/create_container", json={"container": "box"}, headers=admin)
    assert r.status_code == 201
    r = await node.put_blob("box", "x", b"hello" * 1000, admin)
    assert r.status_code == 201, await r.get_data()
    r = await node.client.get("/get_data?container=box&blob=x", headers=admin)
    assert r.status_code == 200
    assert await r.get_data() == b"hello" * 1000
    r = await node.client.head("/get_data?container=box&blob=x", headers=admin)
    assert r.status_code == 200
    # Quart's test client rebuilds HEAD responses from the (empty) body, so the
    # Content-Length of HEAD is checked over real HTTP in tests/e2e.
    assert r.headers["ETag"].startswith('"')

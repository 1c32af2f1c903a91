from pipeline.stage_router import StageRouter


def test_stage_router_picks_least_busy_and_survives_pool_replacement():
    a, b, c = object(), object(), object()
    r = StageRouter([a, b])
    with r.lease() as first, r.lease() as second:
        assert {first, second} == {a, b}
        r.replace([b, c])  # a leaves the pool while a call to it is outstanding
        with r.lease() as third:
            assert third is c
    assert r.outstanding == 0 and len(r) == 2

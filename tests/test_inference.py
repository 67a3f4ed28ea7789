"""Scoring gives exactly one result per example, in order, the same on 8 devices as on one, pmap or sharded."""
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from w2s_jax.data.batches import PairDataset, bucket_lengths
from w2s_jax.eval.inference import score_pairs, score_policy_pairs
from w2s_jax.models import sharding


def _dataset(n, seed=0):
    rng = np.random.RandomState(seed)
    side = lambda: [rng.randint(1, 200, size=rng.randint(2, 30)).astype(np.int32) for _ in range(n)]
    ids_a, ids_b = side(), side()
    masks = lambda ids: [(np.arange(len(x)) >= 1).astype(np.int32) for x in ids]  # first token = prompt
    return PairDataset(ids_a, ids_b, masks(ids_a), masks(ids_b))


@pytest.mark.parametrize("n,batch_size", [(13, 8), (21, 5), (3, 16)])
def test_pmap_on_eight_devices_equals_one_device(loaded, n, batch_size):
    assert len(jax.devices()) == 8
    data, buckets = _dataset(n, seed=n), bucket_lengths(32, 16)
    one = sharding.make_mesh(devices=jax.devices()[:1])
    eight = sharding.make_mesh(data=8, fsdp=1, tensor=1)
    # reference: each pair alone, one device, jit
    ref = score_pairs(loaded.model, loaded.params, data, batch_size=1, mesh=one, buckets=buckets, mode="sharded")
    assert ref.shape == (n,) and np.isfinite(ref).all() and np.ptp(ref) > 0
    on_eight = jax.device_put(loaded.params, NamedSharding(eight, P()))  # the sharded path keeps the mesh's params
    for mesh, mode, params in ((eight, "pmap", loaded.params), (one, "pmap", loaded.params),
                               (eight, "sharded", on_eight)):
        for pack_len in (None, 16):
            got = score_pairs(loaded.model, params, data, batch_size=batch_size, mesh=mesh, buckets=buckets,
                              mode=mode, pack_len=pack_len)
            np.testing.assert_allclose(got, ref, atol=1e-5,
                                       err_msg=f"{mode} on {mesh.devices.size} devices, pack_len={pack_len}")
    policy_ref = score_policy_pairs(loaded.model, loaded.params, data, batch_size=1, mesh=one, buckets=buckets,
                                    chunk_size=None, mode="sharded")
    for pack_len, mesh, params, mode in ((None, eight, loaded.params, "pmap"), (16, eight, loaded.params, "pmap"),
                                         (16, eight, on_eight, "sharded")):
        policy = score_policy_pairs(loaded.model, params, data, batch_size=batch_size, mesh=mesh,
                                    buckets=buckets, chunk_size=8, mode=mode, pack_len=pack_len)
        assert policy.shape == (4, n)
        np.testing.assert_allclose(policy, policy_ref, atol=1e-4, rtol=1e-5, err_msg=f"{mode} {pack_len}")
    lengths = np.array([len(x) - 1 for x in data.ids_a])  # response tokens predicted (position 0 is prompt)
    np.testing.assert_allclose(policy[2], policy[0] / lengths, rtol=1e-5)


def test_unknown_mode_is_refused(loaded):
    with pytest.raises(ValueError, match="config.eval.mode"):
        score_pairs(loaded.model, loaded.params, _dataset(2), batch_size=2,
                    mesh=sharding.make_mesh(devices=jax.devices()[:1]), buckets=(32,), mode="vmap")

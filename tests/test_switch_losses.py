"""The original's remaining reward-model losses (xent, product, logconf_bce) and the "sft" explicit-conflict term,
against torch / NumPy written from original-spec §2.5, §3.8 and §7.3 (the deception repo's loss.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from w2s_jax.objectives import DPO, RewardModel, SimPO
from w2s_jax.train import losses as L
from w2s_jax.train import rm_losses as R

Z = np.array([-2.5, -0.7, 0.0, 0.3, 1.1, 4.0, -8.0, 2.2])
LAB = np.array([0.1, 0.9, 0.5, 0.0, 1.0, 0.35, 0.8, 0.6])


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def mean(terms):
    return float(terms.loss_sum / terms.count)


def two_way(z):
    z = torch.as_tensor(z, dtype=torch.float64)
    return torch.stack([torch.zeros_like(z), z], 1)


def soft(lab):
    lab = torch.as_tensor(lab, dtype=torch.float64)
    return torch.stack([1 - lab, lab], 1)


def test_xent_is_openai_cross_entropy_on_two_classes(x64):
    want = F.cross_entropy(two_way(Z), soft(LAB)).item()
    assert mean(R.rm_xent(jnp.asarray(Z), jnp.asarray(LAB))) == pytest.approx(want, abs=1e-12)
    # the original's literal call on its [B, 1] logit: one class, so the loss is 0 whatever z (why we lift it)
    literal = F.cross_entropy(torch.as_tensor(Z)[:, None], torch.as_tensor(LAB)[:, None]).item()
    assert literal == 0.0


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0)])
def test_product_matches_torch_and_its_target_is_detached(x64, alpha, beta):
    def torch_product(z):
        preds = torch.softmax(z, -1)
        target = preds.pow(beta) * soft(LAB).pow(alpha)
        target = (target / target.sum(-1, keepdim=True)).detach()
        return F.cross_entropy(z, target, reduction="none").mean()

    zt = two_way(Z).requires_grad_(True)
    want = torch_product(zt)
    want.backward()
    got = R.rm_product(jnp.asarray(Z), jnp.asarray(LAB), alpha, beta)
    assert mean(got) == pytest.approx(want.item(), abs=1e-12)
    grad = jax.grad(lambda z: R.rm_product(z, jnp.asarray(LAB), alpha, beta).loss_sum / len(Z))(jnp.asarray(Z))
    # d/dz of the 2-way CE on [0, z] is the class-1 column's gradient
    np.testing.assert_allclose(np.asarray(grad), zt.grad[:, 1].numpy(), atol=1e-12)


def test_product_with_hard_labels_is_bce_on_the_hard_label(x64):
    hard = np.array([0.0, 1.0, 1.0, 0.0])
    z = np.array([0.4, -1.2, 3.0, -0.1])
    expected = np.mean(np.logaddexp(0, -z) * hard + np.logaddexp(0, z) * (1 - hard))
    assert mean(R.rm_product(jnp.asarray(z), jnp.asarray(hard))) == pytest.approx(expected, abs=1e-12)


def torch_logconf_bce(z, lab, step_frac, aux=0.5, warm=0.2):
    """The deception repo's logconf_bce_loss_fn as spec §2.5 states it."""
    z, lab = torch.as_tensor(z, dtype=torch.float64), torch.as_tensor(lab, dtype=torch.float64)
    coef = (1.0 if step_frac > warm else step_frac) * aux
    preds = torch.sigmoid(z)
    threshold = torch.quantile(preds, torch.median(lab))
    target = lab * (1 - coef) + (preds >= threshold).double() * coef
    return F.binary_cross_entropy(torch.sigmoid(z), target).item()


@pytest.mark.parametrize("step_frac", [0.0, 0.1, 0.2, 0.5, 1.0])
def test_logconf_bce_matches_torch(x64, step_frac):
    got = R.rm_logconf_bce(jnp.asarray(Z), jnp.asarray(LAB), step_frac)
    assert mean(got) == pytest.approx(torch_logconf_bce(Z, LAB, step_frac), abs=1e-10)


def test_logconf_bce_uses_the_lower_median_and_ignores_padding(x64):
    # an even count: torch.median takes the lower middle value (0.35 here), not the mean of the two
    z, lab = Z[:6], LAB[:6]
    assert float(torch.median(torch.as_tensor(lab))) == 0.35
    want = torch_logconf_bce(z, lab, 1.0)
    padded = R.rm_logconf_bce(jnp.asarray(np.r_[z, 9.0, -9.0]), jnp.asarray(np.r_[lab, 0.0, 1.0]), 1.0,
                              valid=jnp.arange(8) < 6)
    assert mean(padded) == pytest.approx(want, abs=1e-10)
    jitted = jax.jit(R.rm_logconf_bce)(jnp.asarray(z), jnp.asarray(lab), 1.0)
    assert mean(jitted) == pytest.approx(want, abs=1e-10)


def test_objective_kinds_dispatch_to_the_new_losses():
    for kind in ("xent", "product", "logconf_bce"):
        assert RewardModel(kind).hparams() == {"kind": kind, "alpha": None}
    with pytest.raises(ValueError, match="unknown reward-model loss"):
        RewardModel("mse")


# ----------------------------------------------------------------------------------------- reward_type="sft"

def test_sft_conflict_adds_the_harmful_sides_nll_on_the_active_set(x64):
    """§3.8: M = {(S_π(c) < S_π(r)) == acc}; h = rejected where acc else chosen; L += α Σ_M NLL(h) / B."""
    pc, pr = np.array([-5.0, -3.0, -9.0, -2.0]), np.array([-4.0, -6.0, -1.0, -2.5])
    rc, rr = np.array([-5.5, -3.5, -8.0, -2.2]), np.array([-4.2, -5.0, -1.5, -2.0])
    acc = np.array([True, False, False, True])
    nll_c, nll_r = np.array([0.7, 0.2, 1.3, 0.4]), np.array([0.9, 0.6, 0.1, 0.8])
    beta, alpha = 0.1, 0.5
    margin = beta * ((pc - pr) - (rc - rr))
    main = np.log1p(np.exp(-margin))
    active = (pc < pr) == acc  # [T, F, T, F]
    harmful = np.where(acc, nll_r, nll_c)
    expected = np.mean(main + alpha * active * harmful)
    conflict = L.SFTConflict(jnp.asarray(acc), alpha, jnp.asarray(nll_c), jnp.asarray(nll_r))
    got = L.dpo_loss(*(jnp.asarray(x) for x in (pc, pr, rc, rr)), beta, conflict=conflict)
    assert mean(got) == pytest.approx(expected, abs=1e-12)
    assert float(got.metrics["conflict_active"]) == 2
    # SimPO: the same term on mean log-probs' active set
    mc, mr = pc / 4, pr / 4
    simpo_main = np.log1p(np.exp(-(2.0 * (mc - mr) - 1.0)))
    expected = np.mean(simpo_main + alpha * ((mc < mr) == acc) * harmful)
    got = L.simpo_loss(jnp.asarray(mc), jnp.asarray(mr), 2.0, 1.0, conflict=conflict)
    assert mean(got) == pytest.approx(expected, abs=1e-12)


def test_reward_type_enters_the_fingerprint_only_where_it_acts():
    assert DPO(alpha=0.5).hparams() == DPO(alpha=0.5, reward_type="reverse").hparams() == {"beta": 0.1,
                                                                                            "alpha": 0.5}
    assert DPO(reward_type="sft").hparams() == {"beta": 0.1, "alpha": None}  # no conflict: nothing to say
    assert SimPO(alpha=0.5, reward_type="sft").hparams()["reward_type"] == "sft"
    with pytest.raises(ValueError, match="unknown reward_type"):
        DPO(alpha=0.5, reward_type="forward")

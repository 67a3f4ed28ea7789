"""NumPy references of the loss formulas (original-spec.md) and the inputs the loss tests share."""
import numpy as np


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def bce(z, t):  # BCE(σ(z), t), written as the formula
    p = sig(z)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def nls(x):  # -log σ(x)
    return -np.log(sig(x))


def num_grad(f, x, h=1e-6):
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def mean_loss(fn):
    """jax function of the inputs -> loss_sum / count, for jax.grad."""
    def f(*args, **kw):
        out = fn(*args, **kw)
        return out.loss_sum / out.count
    return f


def away_from_zero(x, eps=0.05):
    return np.where(np.abs(x) < eps, np.sign(x + 1e-12) * eps, x)


RNG = np.random.default_rng(0)
B = 10
VALID = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)  # two padding rows
W = VALID.astype(np.float64)


def conflict_inputs():
    # rows where the student prefers the GT-harmful side (mask on) and rows where it does not (mask off)
    z = np.array([1.5, -0.7, 2.2, -1.1, 0.3, -2.5, 0.9, -0.2, 1.0, -1.0])
    gt = np.array([1, 1, 0, 0, 1, 0, 0, 1, 0, 1], np.float64)
    soft = RNG.uniform(size=B)
    return z, soft, gt


def pref_inputs():
    pc, pr = -RNG.uniform(5, 40, size=B), -RNG.uniform(5, 40, size=B)
    pc[:4], pr[:4] = [-10.0, -12.0, -9.0, -15.0], [-12.0, -10.0, -15.0, -9.0]  # both orders, both acc values
    acc = np.array([True, True, False, False, True, False, True, False, True, False])
    rc, rr = pc + RNG.normal(size=B), pr + RNG.normal(size=B)
    return pc, pr, rc, rr, acc

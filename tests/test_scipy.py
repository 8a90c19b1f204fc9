"""numbagrad's derivatives drive scipy.optimize.minimize: first-order methods through
ng.value_and_grad, Newton-type ones through ng.functional.hessp / hess."""
import numpy as np
import pytest
import scipy.optimize

import numbagrad as ng


def _logistic_problem(seed=0, n=400, d=4):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.standard_normal((n, d - 1)), np.ones(n)])
    w_true = np.array([1.5, -2.0, 0.7, 0.3])
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ w_true))).astype(float)
    return X, y


def _nll(X, y, lam=1e-2):
    """Mean negative log-likelihood of logistic regression plus a ridge term."""
    Xt, yt = ng.tensor(X), ng.tensor(y)

    def nll(w):
        z = Xt @ w
        # log(1 + e^z) as logsumexp(0, z): stable for large |z|, smooth at 0
        softplus = ng.logsumexp(ng.stack([ng.zeros_like(z), z]), 0)
        return (softplus - yt * z).mean() + lam * (w * w).sum()
    return nll


def _reference_optimum(X, y, lam=1e-2):
    """The same objective written in NumPy with a hand-derived gradient."""
    def fg(w):
        z = X @ w
        p = 1 / (1 + np.exp(-z))
        f = np.mean(np.logaddexp(0, z) - y * z) + lam * w @ w
        return f, X.T @ (p - y) / len(y) + 2 * lam * w
    return scipy.optimize.minimize(fg, np.zeros(X.shape[1]), jac=True, method="BFGS",
                                   options={"gtol": 1e-10}).x


@pytest.fixture(scope="module")
def problem():
    X, y = _logistic_problem()
    return X, y, _nll(X, y), _reference_optimum(X, y)


@pytest.mark.parametrize("method", ["BFGS", "L-BFGS-B", "CG"])
def test_first_order_methods(problem, method):
    X, y, nll, w_ref = problem
    # CG's line search stops with "precision loss" near |g| = 1e-8 depending on the last bit
    # of exp (ops._exp is within 1 ulp, libm's within 0.5): ask it for 1e-7
    options = {"BFGS": {"gtol": 1e-8}, "CG": {"gtol": 1e-7},
               "L-BFGS-B": {"gtol": 1e-9, "ftol": 1e-15}}[method]
    r = scipy.optimize.minimize(ng.value_and_grad(nll), np.zeros(4), jac=True, method=method,
                                options=options)
    assert r.success, r.message
    np.testing.assert_allclose(r.x, w_ref, atol=1e-5)


def test_newton_cg_with_hessp(problem):
    X, y, nll, w_ref = problem
    r = scipy.optimize.minimize(ng.value_and_grad(nll), np.zeros(4), jac=True,
                                hessp=ng.functional.hessp(nll), method="Newton-CG",
                                options={"xtol": 1e-10})
    assert r.success, r.message
    np.testing.assert_allclose(r.x, w_ref, atol=1e-6)
    assert r.nit < 20   # second-order convergence, not a gradient crawl


def test_trust_ncg_with_hess(problem):
    X, y, nll, w_ref = problem
    r = scipy.optimize.minimize(ng.value_and_grad(nll), np.zeros(4), jac=True,
                                hess=ng.functional.hess(nll), method="trust-ncg",
                                options={"gtol": 1e-10})
    assert r.success, r.message
    np.testing.assert_allclose(r.x, w_ref, atol=1e-6)


def test_hess_and_hessp_match_the_analytic_hessian(problem):
    X, y, nll, _ = problem
    w = np.array([0.3, -0.2, 0.1, 0.05])
    p = 1 / (1 + np.exp(-X @ w))
    H = (X * (p * (1 - p))[:, None]).T @ X / len(y) + 2e-2 * np.eye(4)
    np.testing.assert_allclose(ng.functional.hess(nll)(w), H, rtol=1e-10)
    v = np.array([1.0, 2.0, -1.0, 0.5])
    np.testing.assert_allclose(ng.functional.hessp(nll)(w, v), H @ v, rtol=1e-10)


def test_extra_args_are_passed_through():
    # scipy calls fun(x, *args), hessp(x, p, *args), hess(x, *args)
    def f(x, c):
        return ((x - c) ** 4).sum() + (x * x).sum()

    c = np.array([3.0, -1.0])
    r = scipy.optimize.minimize(ng.value_and_grad(f), np.zeros(2), args=(c,), jac=True,
                                hessp=ng.functional.hessp(f), method="Newton-CG")
    assert r.success
    # stationary point: 4 (x - c)^3 + 2 x = 0, checked directly
    np.testing.assert_allclose(4 * (r.x - c) ** 3 + 2 * r.x, 0, atol=1e-5)
    H = ng.functional.hess(f)(r.x, c)
    np.testing.assert_allclose(H, np.diag(12 * (r.x - c) ** 2 + 2), rtol=1e-10)

r"""QuickstartExample: an optimizer found by optsearch (written by `optsearch export`).

Update rule, applied as w <- w - lr * u after each step (a state register on
the right of "<-" holds the previous step's value):

    u = w*wd + AspectScale(Polar(beta**2*m + g*(1 - beta**2)))
    m <- beta*m + g*(1 - beta)

In LaTeX:

    \begin{aligned}
    u &= w wd + \sqrt{\max(1, m/n)}\,\left(\operatorname{polar}\left(\beta^{2} m + g \left(1 - \beta^{2}\right)\right)\right) \\
    m &\leftarrow \beta m + g \left(1 - \beta\right)
    \end{aligned}

Default learning rate 2.63e-01: the median over 6 task(s) of the rates the search tuned for it (rounded to 3 digits); tune it for your problem.
Optimizer state: 1 bytes per parameter byte (on a transformer block's matrices).

Provenance:
    run quickstart-20261201-080146, candidate 10
    score +1.0624 against tuned AdamW (stage full), transfer +0.1983
      quadratic: -0.028 (tuned lr 0.1126, train loss 0.003294, eval loss 0.003268)
      matrix_regression: +3.000 (tuned lr 1.156, train loss 0.004929, eval loss -6.104e-05)
      logistic: +0.224 (tuned lr 0.721, train loss 0.05604, eval loss 0.09297)
      rosenbrock: +0.011 (tuned lr 1e-06, train loss 2.088, eval loss 2.079)
      matrix_completion: +2.976 (tuned lr 0.4143, train loss 0.000303, eval loss 0.0004167)
      mlp: +0.192 (tuned lr 0.07187, train loss 0.2371, eval loss 0.236)
    program hash c7f089edd37605fa, behavioural fingerprint c221aa86cbf7d01f
    exported as found (pruned of dead code)

The update function below is the program as straight-line torch code, each
line commented with its statement; state, checks and routing are
RuleOptimizer's. Edit it freely; re-export to regenerate.
"""

from __future__ import annotations

from discovered.rule_optimizer import Constant, RuleOptimizer, State
import primitives.elementwise as _elementwise
import primitives.normalisers as _normalisers
import primitives.polar as _polar

PROVENANCE = {
    'run': 'quickstart-20261201-080146',
    'candidate': 10,
    'score': 1.0623874734817156,
    'stage': 'full',
    'transfer': 0.19825506804665988,
    'tasks': {'quadratic': {'score': -0.027804590332663894, 'lr': 0.11260040074634162, 'train_loss': 0.003294124739477411, 'eval_loss': 0.003267838852480054}, 'matrix_regression': {'score': 3.0, 'lr': 1.1559199638673683, 'train_loss': 0.0049285888671875, 'eval_loss': -6.103515625e-05}, 'logistic': {'score': 0.22392268565813572, 'lr': 0.721023417736975, 'train_loss': 0.056043777614831924, 'eval_loss': 0.09296886622905731}, 'rosenbrock': {'score': 0.01086804240973539, 'lr': 9.999999083230588e-07, 'train_loss': 2.0876536111036934, 'eval_loss': 2.079434633255005}, 'matrix_completion': {'score': 2.975639136549579, 'lr': 0.4143284575748919, 'train_loss': 0.00030300062280730344, 'eval_loss': 0.00041669052734505385}, 'mlp': {'score': 0.19169956660550658, 'lr': 0.07187165306293986, 'train_loss': 0.23709151819348334, 'eval_loss': 0.23600389808416367}},
    'program_hash': 'c7f089edd37605fa',
    'fingerprint': 'c221aa86cbf7d01f',
    'exported': '2026-12-03 20:10 UTC',
}


def matrix_update(g, w, t, m, *, beta, wd, options):
    """One step on a batch of matrices (..., m, n): (u, the new state)."""
    m = _elementwise.interp(g, m, beta=beta)  # m = interp(g, m; beta)
    c = _elementwise.interp(g, m, beta=beta)  # c = interp(g, m; beta)
    o = _polar.polar(c, backend=options['backend'], steps=options['steps'], compute_dtype=options['compute_dtype'])  # o = polar(c)
    o = _normalisers.aspect_scale(o)  # o = aspect_scale(o)
    u = _elementwise.add_scaled(o, w, c=wd)  # u = add_scaled(o, w; wd)
    return u, (m, )


def vector_update(g, w, t, m, *, beta, wd, options):
    """One step on a batch of vectors (..., n), matrix primitives acting on diag(x): (u, the new state)."""
    m = _elementwise.interp(g, m, beta=beta)  # m = interp(g, m; beta)
    c = _elementwise.interp(g, m, beta=beta)  # c = interp(g, m; beta)
    o = _polar.polar_vector(c, backend=options['backend'], steps=options['steps'], compute_dtype=options['compute_dtype'])  # o = polar(c)
    o = _normalisers.aspect_scale_vector(o)  # o = aspect_scale(o)
    u = _elementwise.add_scaled(o, w, c=wd)  # u = add_scaled(o, w; wd)
    return u, (m, )


class QuickstartExample(RuleOptimizer):
    r"""QuickstartExample(params, lr=0.263, beta=0.857207146737573, wd=0.0).

    Update rule, applied as w <- w - lr * u after each step (a state register
    on the right of "<-" holds the previous step's value):

        u = w*wd + AspectScale(Polar(beta**2*m + g*(1 - beta**2)))
        m <- beta*m + g*(1 - beta)

    Args:
        lr: learning rate; the default is explained in the module docstring.
        beta: EMA coefficient: interp(a, b; beta) = (1 - beta) a + beta b (found: 0.857207146737573).
        wd: decoupled weight decay: u + wd w (found: 0.0).
        polar_backend, polar_steps, polar_dtype: how polar factors are computed.
        route, batch_dims, adamw_*: see discovered._contract.MatrixOptimizer.
    """

    STATE = (State('m', 'param', 'zeros', 0.0), )
    CONSTANTS = {
        'beta': Constant(0.857207146737573, 0.0, 2.0, False, True),
        'wd': Constant(0.0, -1000000.0, 1000000.0, False, False),
    }
    ELEMENTWISE = False
    POLAR = True
    matrix_update = staticmethod(matrix_update)
    vector_update = staticmethod(vector_update)

    def __init__(self, params, lr: float = 0.263, beta: float = 0.857207146737573, wd: float = 0.0, **options):
        super().__init__(params, lr, {'beta': beta, 'wd': wd}, **options)

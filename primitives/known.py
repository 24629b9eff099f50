"""Well-known optimizers written as programs: the search's warm starts.

Each is the update of the named optimizer with the learning rate outside
(w <- w - lr u) and decoupled weight decay as a statement. The interpreter
running them agrees with torch.optim and discovered/ (tests/test_programs.py).
"""

from __future__ import annotations

from primitives.serialize import parse

SGD = parse("""
program sgd
return g
""")

SGD_MOMENTUM = parse("""
program sgd_momentum        # torch.optim.SGD(momentum=0.9): m = momentum m + g
state m: PARAM = 0
const momentum = 0.9
m = add_scaled(g, m; momentum)
return m
""")

SGD_NESTEROV = parse("""
program sgd_nesterov        # torch.optim.SGD(momentum=0.9, nesterov=True)
state m: PARAM = 0
const momentum = 0.9
m = add_scaled(g, m; momentum)
u = add_scaled(g, m; momentum)
return u
""")

SIGNSGD = parse("""
program signsgd
u = sign(g)
return u
""")

SIGNUM = parse("""
program signum              # sign of an EMA of gradients (Bernstein et al. 2018)
state m: PARAM = 0
const beta = 0.9
m = interp(g, m; beta)
u = sign(m)
return u
""")

RMSPROP = parse("""
program rmsprop             # torch.optim.RMSprop: g / (sqrt(v) + eps)
state v: PARAM = 0
const alpha = 0.99, eps = 1e-08
g2 = square(g)
v = interp(g2, v; alpha)
d = sqrt(v)
d = add_const(d; eps)
u = div(g, d)
return u
""")

ADAMW = parse("""
program adamw               # torch.optim.AdamW, bias-corrected moments, decoupled decay
state m: PARAM = 0, v: PARAM = 0
const beta1 = 0.9, beta2 = 0.999, eps = 1e-08, wd = 0.01
m = interp(g, m; beta1)
g2 = square(g)
v = interp(g2, v; beta2)
m_hat = debias(m, t; beta1)
v_hat = debias(v, t; beta2)
d = sqrt(v_hat)
d = add_const(d; eps)
u = div(m_hat, d)
u = add_scaled(u, w; wd)
return u
""")

ADAFACTOR = parse("""
program adafactor           # torch.optim.Adafactor with lr <= 1/sqrt(t) (then rho_t = lr)
state r: ROWVEC = 0, c: COLVEC = 0
const decay = -0.8, eps1 = 1.1920929e-07, eps1_sq = 1.4210855e-14, d = 1, eps2 = 0.001, wd = 0
s = abspow(t; decay)        # the EMA weight t^-0.8: the first step takes the new value whole
gr = row_mean_sq(g)
r = mix(r, gr, s)
gc = col_mean_sq(g)
c = mix(c, gc, s)
v = factored_second_moment(r, c; eps1)
n = rsqrt(v; eps1_sq)
u = mul(g, n)
u = rms_clip(u; d)
u = scale_by_param_rms(u, w; eps2)
u = add_scaled(u, w; wd)
return u
""")

LION = parse("""
program lion                # Chen et al. 2023
state m: PARAM = 0
const beta1 = 0.9, beta2 = 0.99, wd = 0
c = interp(g, m; beta1)
s = sign(c)
u = add_scaled(s, w; wd)
m = interp(g, m; beta2)
return u
""")

MUON = parse("""
program muon                # KellerJordan/Muon: orthogonalised Nesterov momentum
state m: PARAM = 0
const beta = 0.95, wd = 0
m = interp(g, m; beta)
c = interp(g, m; beta)
o = polar(c)
o = aspect_scale(o)
u = add_scaled(o, w; wd)
return u
""")

POLARGRAD = parse("""
program polargrad           # momentum-first PolarGrad: <M, polar(M)> polar(M)
state m: PARAM = 0
const beta = 0.95, wd = 0
m = interp(g, m; beta)
p = nuclear_scaled_polar(m)
u = add_scaled(p, w; wd)
return u
""")

POLARGRAD_POLAR_FIRST = parse("""
program polargrad_polar_first   # momentum of polar factors, scaled by <G, polar(G)>
state m: PARAM = 0
const beta = 0.95, wd = 0
p = polar(g)
nu = inner(g, p)
m = interp(p, m; beta)
u = mul(nu, m)
u = add_scaled(u, w; wd)
return u
""")

SHAMPOO = parse("""
program shampoo             # AdaGrad-summed Kronecker factors, L^-1/4 M R^-1/4
state L: ROW = 1e-06 * I, R: COL = 1e-06 * I, m: PARAM = 0
const beta = 0.9, p = 4, eps = 1e-12
gl = gram_left(g)
L = add(L, gl)
gr = gram_right(g)
R = add(R, gr)
m = interp(g, m; beta)
u = kron_precondition(L, m, R; p, eps)
return u
""")

# SOAP (nikhilvyas/SOAP @ a1e5535; discovered.SOAP): Adam in the eigenbasis of
# Shampoo's statistics. The bases start at zero, so the first step rotates
# nothing and does not move (SOAP's first step only builds the preconditioner);
# s = t - 1 counts the steps that moved, for SOAP's bias correction
# sqrt(1 - beta2^s) / (1 - beta1^s) and for its decay, which starts with the
# first move. m is kept in the eigenbasis and carried across a refresh (rotated
# out of the old basis and into the new one, as upstream does at every step).
# Differences from discovered.SOAP: decay is folded into u (w - lr (N + wd w)),
# where SOAP decays the moved parameter ((w - lr N)(1 - lr wd)), a difference of
# lr^2 wd N a step; the refreshed basis keeps its columns in their slots where
# SOAP sorts them and permutes v (the same numbers, elsewhere); m's rotation out
# and back in every step is the identity up to round-off. On a vector (route
# "rule") the basis is the identity and this is SOAP's 1-D rule (Adam, without
# precondition_1d); a conv kernel is the (out, in*kh*kw) matrix, which is SOAP
# with merge_dims where that merge gives the same view (SOAP's default factors
# each of the four dimensions). Agreement: to round-off on integer-valued
# gradients; on real-valued ones wherever the statistics are regular (the longer
# side of a non-square matrix has a singular first statistic, whose null-space
# basis eigh fixes by round-off, in SOAP as here). tests/test_soap_program.py.
SOAP = parse("""
program soap
state L: ROW = 0, R: COL = 0, QL: ROW = 0, QR: COL = 0, m: PARAM = 0, v: PARAM = 0
const beta1 = 0.95, beta2 = 0.95, shampoo_beta = 0.95, eps = 1e-08, wd = 0.01, k = 10, minus_one = -1, floor = 1e-16
h = rotate_in(QL, g, QR)      # the gradient in the eigenbasis (zero before the first step's eigh)
m = interp(h, m; beta1)
h2 = square(h)
v = interp(h2, v; beta2)
d = sqrt(v)
d = add_const(d; eps)
n = div(m, d)
n = rotate_out(QL, n, QR)     # Adam's direction, back in the parameter's coordinates
s = add_const(t; minus_one)   # steps that moved
n = debias(n, s; beta1)
one = div(t, t)
c = debias(one, s; beta2)
c = rsqrt(c; floor)           # sqrt(1 - beta2^s)
u = mul(n, c)
moved = min(s, one)           # 0 at the first step, 1 after: no decay before the first move
dw = mul(w, moved)
u = add_scaled(u, dw; wd)
gl = gram_left(g)
L = interp(gl, L; shampoo_beta)
gr = gram_right(g)
R = interp(gr, R; shampoo_beta)
m = rotate_out(QL, m, QR)     # m out of the old basis
QL = eigenbasis(L, QL, t; k)
QR = eigenbasis(R, QR, t; k)
m = rotate_in(QL, m, QR)      # and into the new one
return u
""")

# One-sided Shampoo as in ASGO (infinity-stars/ASGO optimizers/asgo.py): momentum
# preconditioned by the inverse square root of the left statistic only, then
# rescaled to RMS 0.2 (0.2 sqrt(mn) / ||U||_F). R is never written: it keeps its
# initial I, and (I + eps I)^(-1/2) = I up to eps (it costs no memory). ASGO takes
# the smaller side; this program takes the left one (for an (out, in) weight, the
# output side). With beta2 = beta1 = 0 its direction is polar(G) at RMS 0.2.
# ASGO's config decays by wd = 0.1 at lr 1e-2; here wd = 0, as in the other matrix
# programs (Muon, PolarGrad, Shampoo): with the rate tuned (a normalised step is
# tuned to lr ~ 1 on small problems) a fixed 0.1 would shrink w by lr wd a step.
ONE_SIDED_SHAMPOO = parse("""
program one_sided_shampoo
state L: ROW = 0, R: COL = 1.0 * I, m: PARAM = 0
const beta1 = 0.9, beta2 = 0.8, p = 2, eps = 1e-10, rms = 0.2, wd = 0
m = interp(g, m; beta1)
gl = gram_left(g)
L = interp(gl, L; beta2)
o = kron_precondition(L, m, R; p, eps)    # (L + eps I)^(-1/2) M
o = normalize(o)
o = scale(o; rms)
u = add_scaled(o, w; wd)
return u
""")

# Shampoo with Adam grafting (facebookresearch/optimizers distributed_shampoo,
# AdamGraftingConfig): Shampoo's direction L^-1/4 M R^-1/4 (AdaGrad-summed
# factors, bias-corrected momentum M) rescaled, per parameter, to the
# Frobenius norm of Adam's direction M / (sqrt(V) + eps). DS rescales per
# block with a 1e-16 guard in the denominator; div floors it at 1e-30.
SHAMPOO_GRAFTED = parse("""
program shampoo_grafted
state L: ROW = 1e-06 * I, R: COL = 1e-06 * I, m: PARAM = 0, v: PARAM = 0
const beta1 = 0.9, beta2 = 0.999, p = 4, eps = 1e-12, graft_eps = 1e-08, wd = 0
gl = gram_left(g)
L = add(L, gl)
gr = gram_right(g)
R = add(R, gr)
m = interp(g, m; beta1)
m_hat = debias(m, t; beta1)
g2 = square(g)
v = interp(g2, v; beta2)
v_hat = debias(v, t; beta2)
d = sqrt(v_hat)
d = add_const(d; graft_eps)
a = div(m_hat, d)                         # Adam's direction
o = kron_precondition(L, m_hat, R; p, eps)
na = frobenius(a)
no = frobenius(o)
r = div(na, no)
u = mul(o, r)
u = add_scaled(u, w; wd)
return u
""")

# The Lion paper's raw discovered program (Chen et al. 2023, Program 8), with
# its clip/arcsin input transform dropped and the lr factor kept as a scale:
# m / sqrt(m * m) is sign(m), the two interps compose into Lion's beta2
# (1 - 1.109 * 0.101 ... = 0.99699), and `m = cosh(update)` is dead because
# the next step assigns m before reading it.
LION_RAW = parse("""
program lion_raw
state m: PARAM = 0, v: PARAM = 0
const b1 = 0.899, b2 = 1.109, wd = 0.4602, lr_scale = 0.0002
m = interp(g, v; b1)
m2 = mul(m, m)
v = interp(g, m; b2)
abs_m = sqrt(m2)
update = div(m, abs_m)
decay = scale(w; wd)
update = add(update, decay)
m = cosh(update)
u = scale(update; lr_scale)
return u
""")

KNOWN_PROGRAMS = {
    p.name: p
    for p in (SGD, SGD_MOMENTUM, SGD_NESTEROV, SIGNSGD, SIGNUM, RMSPROP, ADAMW, ADAFACTOR, LION, MUON,
              POLARGRAD, POLARGRAD_POLAR_FIRST, SHAMPOO, SOAP, ONE_SIDED_SHAMPOO, SHAMPOO_GRAFTED)
}

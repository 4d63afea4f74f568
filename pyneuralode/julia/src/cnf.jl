# Continuous normalising flows: pyneuralode's `CNF` on the package's own augmented dynamics.
#
# Convention (pyneuralode/_cnf.py): data `x` sits at `ts[1]` (the CNF's t1) and flows to the standard-normal
# base density at `ts[2]` (its t0) under dz/dt = f(z, t). The augmented state is one `(D + 1, B)` array
# `[z; l]` with dl/dt = tr(∂f/∂z), or `(D + 3, B)` with the RNODE integrands ||f||² and ||∂f/∂z||_F², so the
# step controller's norm sees the same numbers as on JAX/torch (their `(B, D + 1)` layout, transposed). Then
#     log p(x) = log N(z(ts[2]); 0, I) + l(ts[2]).
#
# The trace is computed from forward-mode directional derivatives written as plain array code
# ([`spec_jvp`](@ref)): the field's value and `(∂f/∂z) v` for K directions `v` in one pass, which reverse-mode
# AD (SciMLSensitivity's VJPs, Zygote/ReverseDiff) then differentiates like any layer.
# - exact trace: the D basis directions, trace = Σ_i (∂f/∂z)_ii, ||∂f/∂z||_F² = Σ of the squares;
# - Hutchinson with a fixed ε (`(D, B)`, drawn by the caller once per solve): one direction, ε, and the
#   estimate εᵀ(∂f/∂z)ε; with the Jacobian regulariser the D basis directions give εᵀ(∂f/∂z) exactly, so its
#   estimate is ||εᵀ ∂f/∂z||² as on JAX/torch (those get εᵀ ∂f/∂z from one VJP instead).
# DiffEqFlux's FFJORD is not used: its model takes no time input (pyneuralode's CNF fields do) and its
# Hutchinson noise is Gaussian and redrawn on every right-hand-side call (reference/julia-api.md §3.7).

"""
    CNFDynamics

Augmented right-hand side `a -> [f(z, t); trace; (||f||², ||J||²)]` of a CNF on a [`NeuralField`](@ref),
`a = [z; l; ...]` of shape `(D + 1 (+ 2), B)`. One counted field evaluation per call (`f.nfe`).
`seed` holds the directions (`(D, B, K)`), `eps` Hutchinson's ε (`(D, B)`; unused for the exact trace) and
`eps_row` the same ε as `(1, B, D)`; all three are constants of the solve.
"""
struct CNFDynamics{F <: NeuralField, S <: AbstractArray, E <: AbstractMatrix, R <: AbstractArray}
    f::F
    dim::Int
    hutchinson::Bool
    regularised::Bool
    seed::S
    eps::E
    eps_row::R
end

function _basis_seed(::Type{T}, D::Int, B::Int) where {T}
    V = zeros(T, D, B, D)
    for j in 1:D, b in 1:B
        V[j, b, j] = one(T)
    end
    return V
end

function CNFDynamics(f::NeuralField, eps::AbstractMatrix, hutchinson::Bool, regularised::Bool)
    T = f.eltype
    D, B = size(eps)
    E = _to_device(f.device, Matrix{T}(eps))
    seed = hutchinson && !regularised ? reshape(E, D, B, 1) : _to_device(f.device, _basis_seed(T, D, B))
    eps_row = reshape(permutedims(E), 1, B, D)
    return CNFDynamics(f, D, hutchinson, regularised, seed, E, eps_row)
end

_row(v) = reshape(v, 1, :)

function (c::CNFDynamics)(a::AbstractMatrix, p, t)     # `a` reshaped from the flat state by `FlatRHS`
    f = c.f
    _tick!(f.nfe)
    z = a[1:(c.dim), :]
    value, V = spec_jvp(f.model, z, c.seed, t, _components(p, f.ax), f.st)
    if !c.hutchinson                    # V[:, b, j] = (∂f/∂z)_b e_j
        trace = sum(V .* c.seed; dims = (1, 3))
        c.regularised || return vcat(value, _row(trace))
        jac_sq = sum(abs2, V; dims = (1, 3))
    elseif !c.regularised               # V[:, b, 1] = (∂f/∂z)_b ε_b
        return vcat(value, _row(sum(c.eps .* V[:, :, 1]; dims = 1)))
    else                                # e_jac[1, b, j] = (εᵀ ∂f/∂z)_bj
        e_jac = sum(reshape(c.eps, c.dim, size(c.eps, 2), 1) .* V; dims = 1)
        trace = sum(e_jac .* c.eps_row; dims = (1, 3))
        jac_sq = sum(abs2, e_jac; dims = (1, 3))
    end
    return vcat(value, _row(trace), sum(abs2, value; dims = 1), _row(jac_sq))
end

function _cnf_times(f::NeuralField, ts::AbstractVector)
    length(ts) == 2 || throw(ArgumentError("a CNF solve takes two times, [t_data, t_base]"))
    times = Vector{f.eltype}(ts)
    times[1] == times[2] && throw(ArgumentError("the two times must differ"))
    reversed = times[2] < times[1]
    return (reversed ? -times : times), reversed
end

_base_logp(z::AbstractMatrix{T}) where {T} = vec(-sum(abs2, z; dims = 1) ./ 2) .- T(size(z, 1) * log(2 * T(pi)) / 2)

_cnf_extra(regularised::Bool) = regularised ? 3 : 1

function _cnf_inputs(f::NeuralField, x::AbstractMatrix, eps::AbstractMatrix)
    size(eps) == size(x) || throw(DimensionMismatch("eps has size $(size(eps)), x has $(size(x))"))
    return _to_device(f.device, Matrix{f.eltype}(x))
end

"""
    cnf_density(f, opts, x, eps, ts; hutchinson = false) ->
        (logpx, z, delta, nfe, nf, naccept, nreject, njacs, retcode, warnings)

Log-density of the samples `x` (`(D, B)`) flowing from `ts[1]` to a standard normal at `ts[2]`: `logpx`
(length `B`), the base points `z` (`(D, B)`) and `delta = logpx - log N(z)`, the counted evaluations of the
augmented field and `sol.stats`. With `hutchinson` the trace is estimated with the fixed noise `eps`
(`(D, B)`; ignored otherwise). No gradients: see [`cnf_value_and_grad`](@ref).
"""
function cnf_density(f::NeuralField, opts::SolveOptions, x::AbstractMatrix, eps::AbstractMatrix,
        ts::AbstractVector; hutchinson::Bool = false)
    T = f.eltype
    X = _cnf_inputs(f, x, eps)
    D, B = size(X)
    s, reversed = _cnf_times(f, ts)
    dyn = CNFDynamics(f, eps, hutchinson, false)
    rhs = reversed ? Reversed(dyn) : dyn
    a0 = vcat(X, _to_device(f.device, zeros(T, 1, B)))
    prob = flat_problem(rhs, a0, (s[1], s[2]), f.p)
    logger = WarnCollector()
    f.nfe[] = 0
    sol = Logging.with_logger(logger) do
        solve(prob, opts.alg; saveat = s, _solve_kwargs(opts, s; reversed)...)
    end
    nfe = f.nfe[]
    status = _status(sol, 2)
    warnings = join(logger.messages, "\n")
    if status != "Success"
        empty = zeros(T, 0)
        return (empty, zeros(T, 0, 0), empty, nfe, _stats(sol)..., status, warnings)
    end
    a1 = reshape(_host(sol.u[end]), size(a0))
    z = a1[1:D, :]
    delta = vec(a1[D + 1, :])
    return (_base_logp(z) .+ delta, z, delta, nfe, _stats(sol)..., status, warnings)
end

"""
    cnf_value_and_grad(f, opts, x, eps, ts; hutchinson = false, kinetic = 0.0, jacobian = 0.0) ->
        (value, nll, kinetic, jacobian, grad_params, grad_x, nfe_forward, nf, naccept, nreject, njacs,
         retcode, warnings, nfe_backward, backward_warnings)

pyneuralode's `NLL` of the batch `x` (`(D, B)`): `value = nll + kinetic_weight * kinetic + jacobian_weight *
jacobian` with `nll = -mean(log p(x))` and the RNODE integrals' batch means (solved for only when a weight is
positive, as on JAX/torch). Gradients with respect to the canonical flat parameters and to `x`, through
`opts.sensealg` (the CNF's adjoint, mapped as for an ODE model). `nfe_backward` counts every field evaluation
of the backward pass. On a failed forward solve `retcode` says why and the arrays are empty.
"""
function cnf_value_and_grad(f::NeuralField, opts::SolveOptions, x::AbstractMatrix, eps::AbstractMatrix,
        ts::AbstractVector; hutchinson::Bool = false, kinetic::Real = 0.0, jacobian::Real = 0.0)
    T = f.eltype
    X = _cnf_inputs(f, x, eps)
    D, B = size(X)
    s, reversed = _cnf_times(f, ts)
    kw, jw = T(kinetic), T(jacobian)
    regularised = kw > 0 || jw > 0
    dyn = CNFDynamics(f, eps, hutchinson, regularised)
    rhs = reversed ? Reversed(dyn) : dyn
    pad = _to_device(f.device, zeros(T, _cnf_extra(regularised), B))
    shape = (D + size(pad, 1), B)
    prob = flat_problem(rhs, vcat(X, pad), (s[1], s[2]), f.p)
    rec = _SolveRecord((-1, -1, -1, -1), 0)
    sensealg = opts.sensealg
    kwargs = _solve_kwargs(opts, s; reversed)
    function objective(xx, p)
        sol = solve(prob, opts.alg; u0 = vec(vcat(xx, pad)), p = p, saveat = s, sensealg, kwargs...)
        _record!(rec, sol, 2)
        a1 = _saved(sol, shape)[:, :, end]
        nll = -sum(_base_logp(a1[1:D, :]) .+ a1[D + 1, :]) / B
        if regularised
            kin, jac = -sum(a1[D + 2, :]) / B, -sum(a1[D + 3, :]) / B
        else
            kin, jac = zero(T), zero(T)
        end
        return nll + kw * kin + jw * jac, (nll, kin, jac)
    end
    logger = WarnCollector()
    f.nfe[] = 0
    result = try
        Logging.with_logger(() -> Zygote.pullback(objective, X, f.p), logger)
    catch err
        failed = Logging.with_logger(() -> _failure(err, prob, opts, s; reversed), logger)
        failed === nothing && rethrow()
        failed
    end
    nfe_f = f.nfe[]
    warnings = join(logger.messages, "\n")
    if result isa _SolveFailed
        z0 = zero(T)
        return (z0, z0, z0, z0, zeros(T, 0), zeros(T, 0, 0), nfe_f, rec.stats..., result.retcode, warnings,
            0, "")
    end
    (value, (nll, kin, jac)), back = result
    logger_b = WarnCollector()
    f.nfe[] = 0
    gx, gp = Logging.with_logger(() -> back((one(T), nothing)), logger_b)
    nfe_b = f.nfe[]
    grad_x = gx === nothing ? zeros(T, D, B) : Matrix{T}(_host(gx))
    grad_p = gp === nothing ? zeros(T, length(f.perm)) : to_canonical(f, _lux_gradient(gp, f))
    return (T(value), T(nll), T(kin), T(jac), grad_p, grad_x, nfe_f, rec.stats..., "Success", warnings, nfe_b,
        join(logger_b.messages, "\n"))
end

"""
    cnf_logpx(f, opts, x, ts) -> (logpx, z, l, nfe, nf, naccept, nreject, njacs, retcode, warnings)

Exact-trace log-density of `x` (`(D, B)`) under the flow from `ts[1]` to a standard normal at `ts[2]`: the
forward-only hook kept for `JuliaProgram.cnf_log_prob`; [`cnf_density`](@ref) with the exact trace.
"""
cnf_logpx(f::NeuralField, opts::SolveOptions, x::AbstractMatrix, ts::AbstractVector) =
    cnf_density(f, opts, x, zeros(f.eltype, size(x)), ts; hutchinson = false)

# Continuous normalising flow log-density hook (exact trace), for pyneuralode's CNF work.
#
# Convention: data `x` sits at `ts[1]` and flows to the base distribution (standard normal) at `ts[2]`
# under dz/dt = f(z, t). With l(t) = integral of tr(df/dz) from ts[1] to t, the change of variables gives
#     log p_x(x) = log N(z(ts[2]); 0, I) + l(ts[2]).
# For the paper's orientation (base at t0, data at t1) pass the times reversed: `ts = [t1, t0]`.
#
# The trace is exact: one evaluation of `f` on `ForwardDiff.Dual`s carrying D partials, seeded so that
# partial i of output row i of sample b is d f_i / d z_i of that sample (samples are independent columns).
# DiffEqFlux's FFJORD would need a time-free Lux model and redraws Gaussian Hutchinson noise on every
# right-hand-side call; this hook keeps the spec's time input and is deterministic.

struct _CNFTag end

"""Augmented right-hand side `[z; l] -> [f(z, t); tr(df/dz)]`, one counted `f` evaluation per call."""
struct CNFField{F <: NeuralField}
    f::F
end

function (c::CNFField)(a::AbstractMatrix, p, t)
    D = size(a, 1) - 1
    dz, divergence = _value_and_divergence(c.f, a[1:D, :], p, t)
    return vcat(dz, reshape(divergence, 1, :))
end

function _value_and_divergence(f::NeuralField, z::AbstractMatrix{T}, p, t) where {T}
    D, B = size(z)
    seeds = ntuple(i -> ForwardDiff.Partials(ntuple(j -> T(i == j), D)), D)
    zd = Matrix{ForwardDiff.Dual{_CNFTag, T, D}}(undef, D, B)
    for b in 1:B, i in 1:D
        zd[i, b] = ForwardDiff.Dual{_CNFTag}(z[i, b], seeds[i])
    end
    out = f(zd, p, t)
    value = ForwardDiff.value.(out)
    divergence = [sum(ForwardDiff.partials(out[i, b], i) for i in 1:D) for b in 1:B]
    return value, divergence
end

"""
    cnf_logpx(f, opts, x, ts) -> (logpx, z, l, nfe, nf, naccept, nreject, njacs, retcode, warnings)

Log-density of the samples `x` (`(D, B)`) under the flow of `f` from `ts[1]` to `ts[2]` onto a standard
normal: `logpx` (length `B`), the base points `z` (`(D, B)`), the integrated trace `l`, the counted
evaluations of the augmented field and `sol.stats`. CPU only (the trace seeds are set per element);
forward only (gradients of the CNF loss are not wired through this hook yet).
"""
function cnf_logpx(f::NeuralField, opts::SolveOptions, x::AbstractMatrix, ts::AbstractVector)
    f.device == :cpu || throw(ArgumentError("cnf_logpx runs on the CPU only"))
    length(ts) == 2 || throw(ArgumentError("cnf_logpx takes two times, [t_data, t_base]"))
    T = f.eltype
    X = Matrix{T}(x)
    D, B = size(X)
    times = Vector{T}(ts)
    times[1] == times[2] && throw(ArgumentError("the two times must differ"))
    reversed = times[2] < times[1]
    s = reversed ? -times : times
    rhs = reversed ? Reversed(CNFField(f)) : CNFField(f)
    prob = ODEProblem{false}(ODEFunction{false}(rhs), vcat(X, zeros(T, 1, B)), (s[1], s[2]), f.p)
    logger = WarnCollector()
    f.nfe[] = 0
    sol = Logging.with_logger(logger) do
        solve(prob, opts.alg; saveat = s, opts.kwargs...)
    end
    nfe = f.nfe[]
    status = _status(sol, 2)
    warnings = join(logger.messages, "\n")
    if status != "Success"
        empty = zeros(T, 0)
        return (empty, zeros(T, 0, 0), empty, nfe, _stats(sol)..., status, warnings)
    end
    a1 = sol.u[end]
    z = a1[1:D, :]
    l = vec(a1[D + 1, :])
    logpz = vec(-sum(abs2, z; dims = 1) ./ 2) .- T(D * log(2 * pi) / 2)
    return (logpz .+ l, z, l, nfe, _stats(sol)..., status, warnings)
end

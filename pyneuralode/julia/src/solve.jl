# Solving and differentiating a NeuralField.
#
# API facts relied on (checked against the sources; see also pyneuralode's reference/julia-api.md):
# - `solve(ODEProblem{false}(ODEFunction{false}(f), u0, tspan, p), alg; saveat, reltol, abstol, maxiters,
#   sensealg)`; inside `Zygote.pullback` the `solve` call hits SciMLSensitivity's adjoint rule, which keeps
#   `sol.stats` and `sol.retcode` on the solution it returns (SciMLBase `sensitivity_solution`).
# - `sol.stats` (`SciMLBase.DEStats`: nf, naccept, nreject, ...); `sol.destats` is gone in SciMLBase v3.
# - `successful_retcode(sol)`; comparing `sol.retcode` with a Symbol is removed in SciMLBase v3.
# - `Array(sol)` of a `(D, B)` state is `(D, B, T)` (RecursiveArrayTools v3 and v4).
# - Stiff solvers take `autodiff = AutoForwardDiff()/AutoFiniteDiff()` (ADTypes; `Bool` rejected in v7).
# - Step-size controller: v7 moved `gamma, qmin, qmax, qsteady_*` from `solve` kwargs onto
#   `IController(; ...)` (OrdinaryDiffEq NEWS.md, "Controller refactor"); older OrdinaryDiffEqCore has a
#   field-less `IController()` and takes those knobs as `solve` kwargs. `_controller_kwargs` handles both.
# - Sensitivity algorithms (SciMLSensitivity src/sensitivity_algorithms.jl): `BacksolveAdjoint(; autojacvec,
#   checkpointing = true)`, `InterpolatingAdjoint(; autojacvec, checkpointing = false)`,
#   `QuadratureAdjoint(; autojacvec, abstol = 1e-6, reltol = 1e-3)`, `GaussAdjoint(; autojacvec,
#   checkpointing = false)`, `ReverseDiffAdjoint()` (discrete adjoint, CPU `Array` states only);
#   VJPs `ZygoteVJP()`, `ReverseDiffVJP(compile = false)`, `EnzymeVJP()`.

const FIXED_STEP = ("euler", "midpoint", "heun", "rk4")
const OWN_CONTROLLER = ("qndf", "fbdf")   # multistep methods with an integrated order/step controller

"""
    make_alg(name; jac = "forwarddiff")

The OrdinaryDiffEq algorithm for a pyneuralode solver name. `jac` picks how implicit methods build their
Jacobian: `"forwarddiff"` (`AutoForwardDiff()`) or `"finitediff"` (`AutoFiniteDiff()`).
"""
function make_alg(name::AbstractString; jac::AbstractString = "forwarddiff")
    ad = jac == "forwarddiff" ? AutoForwardDiff() :
        jac == "finitediff" ? AutoFiniteDiff() :
        throw(ArgumentError("jac must be \"forwarddiff\" or \"finitediff\", got $(repr(jac))"))
    name == "euler" && return Euler()
    name == "midpoint" && return Midpoint()
    name == "heun" && return Heun()
    name == "rk4" && return RK4()
    name == "bs3" && return BS3()
    name == "dp5" && return DP5()
    name == "tsit5" && return Tsit5()
    name == "dp8" && return DP8()
    name == "vern7" && return Vern7()
    name == "kvaerno5" && return Kvaerno5(; autodiff = ad)
    name == "kencarp4" && return KenCarp4(; autodiff = ad)
    name == "rodas5p" && return Rodas5P(; autodiff = ad)
    name == "qndf" && return QNDF(; autodiff = ad)
    name == "fbdf" && return FBDF(; autodiff = ad)
    throw(ArgumentError("unknown solver $(repr(name))"))
end

"""
    make_sensealg(kind, vjp; checkpointing = false, rtol, atol)

`kind` is `"backsolve"`, `"interpolating"`, `"quadrature"`, `"gauss"` or `"reversediff"` (the discrete
adjoint pyneuralode calls `DirectAdjoint`); `vjp` is `"zygote"`, `"reversediff"` or `"enzyme"`.
`BacksolveAdjoint` runs without SciMLSensitivity's checkpointing, i.e. the paper's pure backsolve (as
torchdiffeq and diffrax do); `QuadratureAdjoint` gets the forward tolerances for its quadrature instead
of its defaults (1e-6, 1e-3). `ReverseDiffVJP` never compiles its tape: the spec's activations branch.
"""
function make_sensealg(kind::AbstractString, vjp::AbstractString; checkpointing::Bool = false,
        rtol::Real = 1e-6, atol::Real = 1e-8)
    kind == "reversediff" && return ReverseDiffAdjoint()
    v = vjp == "zygote" ? ZygoteVJP() :
        vjp == "reversediff" ? ReverseDiffVJP(false) :
        vjp == "enzyme" ? EnzymeVJP() :
        throw(ArgumentError("vjp must be \"zygote\", \"reversediff\" or \"enzyme\", got $(repr(vjp))"))
    kind == "backsolve" && return BacksolveAdjoint(; autojacvec = v, checkpointing = false)
    kind == "interpolating" && return InterpolatingAdjoint(; autojacvec = v, checkpointing)
    kind == "quadrature" && return QuadratureAdjoint(; autojacvec = v, abstol = Float64(atol),
        reltol = Float64(rtol))
    kind == "gauss" && return GaussAdjoint(; autojacvec = v, checkpointing)
    throw(ArgumentError("unknown sensitivity algorithm $(repr(kind))"))
end

"""
    _controller_kwargs(safety, factormin, factormax)

`solve` keywords for an integral controller with pyneuralode's `StepControl` meaning (as diffrax's
`PIDController(pcoeff=0, icoeff=1)` and torchdiffeq): new `dt = dt * clamp(safety * err^(-1/k),
factormin, factormax)`, no dead band (`qsteady_min = qsteady_max = 1`) and no special first-step growth.
"""
function _controller_kwargs(safety::Real, factormin::Real, factormax::Real)
    fields = fieldnames(IController)
    if isempty(fields)   # OrdinaryDiffEqCore before the controller refactor: knobs are `solve` kwargs
        return (; controller = IController(), gamma = safety, qmin = factormin, qmax = factormax,
            qsteady_min = 1.0, qsteady_max = 1.0)
    end
    wanted = (; qmin = Float64(factormin), qmax = Float64(factormax), qmax_first_step = Float64(factormax),
        gamma = Float64(safety), qsteady_min = 1.0, qsteady_max = 1.0)
    names = Tuple(k for k in keys(wanted) if k in fields)
    return (; controller = IController(; NamedTuple{names}(wanted)...))
end

"""
    SolveOptions

Everything about a solve except the data: algorithm, sensitivity algorithm, `solve` keywords (tolerances,
step control, `maxiters`) and the element type. Built once per model by [`solve_options`](@ref).
"""
struct SolveOptions{A, S, K <: NamedTuple}
    alg::A
    sensealg::S
    kwargs::K
    max_steps::Int
    eltype::DataType
end

"""
    solve_options(; solver = "tsit5", rtol = 1e-6, atol = 1e-8, dt0 = nothing, dt = nothing,
        max_steps = 4096, safety = 0.9, factormin = 0.2, factormax = 10.0, sensealg = "interpolating",
        vjp = "zygote", checkpointing = false, jac = "forwarddiff", dtype = "float64") -> SolveOptions

`max_steps` becomes `maxiters` (OrdinaryDiffEq counts accepted and rejected steps, as pyneuralode does).
Fixed-step solvers need `dt`; adaptive ones start from `dt0` when given, else from OrdinaryDiffEq's
Hairer-Wanner initial step rule. `qndf`/`fbdf` keep their own controllers.
"""
function solve_options(; solver::AbstractString = "tsit5", rtol::Real = 1e-6, atol::Real = 1e-8,
        dt0 = nothing, dt = nothing, max_steps::Integer = 4096, safety::Real = 0.9, factormin::Real = 0.2,
        factormax::Real = 10.0, sensealg::AbstractString = "interpolating", vjp::AbstractString = "zygote",
        checkpointing::Bool = false, jac::AbstractString = "forwarddiff", dtype::AbstractString = "float64")
    T = _float_type(dtype)
    alg = make_alg(solver; jac)
    sa = make_sensealg(sensealg, vjp; checkpointing, rtol, atol)
    if solver in FIXED_STEP
        dt === nothing && throw(ArgumentError("$solver is a fixed-step method: give it a step dt"))
        kwargs = (; adaptive = false, dt = T(dt), maxiters = Int(max_steps))
    else
        kwargs = (; reltol = T(rtol), abstol = T(atol), maxiters = Int(max_steps))
        dt0 === nothing || (kwargs = merge(kwargs, (; dt = T(dt0))))
        solver in OWN_CONTROLLER || (kwargs = merge(kwargs, _controller_kwargs(safety, factormin, factormax)))
    end
    return SolveOptions(alg, sa, kwargs, Int(max_steps), T)
end

# ---------------------------------------------------------------------------------------------- helpers
"""Right-hand side in reversed time, `s = -t`, so decreasing save times become an increasing solve."""
struct Reversed{F}
    f::F
end
(r::Reversed)(u, p, s) = -(r.f(u, p, -s))

"""Warnings Julia logs during a call (SciMLBase's "Interrupted. Larger maxiters is needed.", ...)."""
struct WarnCollector <: Logging.AbstractLogger
    messages::Vector{String}
end
WarnCollector() = WarnCollector(String[])
Logging.min_enabled_level(::WarnCollector) = Logging.Warn
Logging.shouldlog(::WarnCollector, level, _module, group, id) = true
Logging.catch_exceptions(::WarnCollector) = true
function Logging.handle_message(l::WarnCollector, level, message, _module, group, id, file, line;
        kwargs...)
    push!(l.messages, string(message))
    return nothing
end

function _inputs(f::NeuralField, u0::AbstractMatrix, ts::AbstractVector)
    T = f.eltype
    length(ts) >= 2 || throw(ArgumentError("need at least two save times (t0 and one more)"))
    size(u0, 1) > 0 || throw(ArgumentError("empty state"))
    times = Vector{T}(ts)
    reversed = times[end] < times[1]
    s = reversed ? -times : times
    issorted(s; lt = <=) || throw(ArgumentError("save times must be strictly monotonic"))
    return _to_device(f.device, Matrix{T}(u0)), s, reversed
end

function _problem(f::NeuralField, U0, s::AbstractVector, reversed::Bool)
    rhs = reversed ? Reversed(f) : f
    return ODEProblem{false}(ODEFunction{false}(rhs), U0, (first(s), last(s)), f.p)
end

function _retcode_name(rc)
    rc == ReturnCode.Success && return "Success"
    rc == ReturnCode.MaxIters && return "MaxIters"
    rc == ReturnCode.Unstable && return "Unstable"
    rc == ReturnCode.DtNaN && return "DtNaN"
    rc == ReturnCode.DtLessThanMin && return "DtLessThanMin"
    rc == ReturnCode.ConvergenceFailure && return "ConvergenceFailure"
    return string(rc)
end

_stats(sol) = sol.stats === nothing ? (-1, -1, -1, -1) :
    (Int(sol.stats.nf), Int(sol.stats.naccept), Int(sol.stats.nreject), Int(sol.stats.njacs))

_saved(sol) = Array(sol)   # (D, B, T)

# "Success", a ReturnCode name, or "SaveMismatch" (successful but not saved at every requested time).
function _status(sol, nsaved::Int)
    successful_retcode(sol) || return _retcode_name(sol.retcode)
    return length(sol.t) == nsaved ? "Success" : "SaveMismatch"
end

# ---------------------------------------------------------------------------------------------- forward
"""
    forward(f, opts, u0, ts) -> (ys, nfe, nf, naccept, nreject, njacs, retcode, warnings)

Solve from `u0` (`(D, B)`) at `ts[1]`, saving at every `ts` (increasing or decreasing). `ys` is
`(D, B, length(ts))` on the host (empty when the solve failed: check `retcode`), `nfe` the counted
vector-field evaluations, `nf, naccept, nreject, njacs` from `sol.stats`, `retcode` a `ReturnCode` name,
`warnings` the Julia warnings logged during the solve (newline-separated).
"""
function forward(f::NeuralField, opts::SolveOptions, u0::AbstractMatrix, ts::AbstractVector)
    U0, s, reversed = _inputs(f, u0, ts)
    prob = _problem(f, U0, s, reversed)
    logger = WarnCollector()
    f.nfe[] = 0
    sol = Logging.with_logger(logger) do
        solve(prob, opts.alg; saveat = s, opts.kwargs...)
    end
    nfe = f.nfe[]
    ok = successful_retcode(sol) && length(sol.t) == length(s)
    ys = ok ? _host(_saved(sol)) : zeros(f.eltype, 0, 0, 0)
    return (ys, nfe, _stats(sol)..., _status(sol, length(s)), join(logger.messages, "\n"))
end

# ---------------------------------------------------------------------------------------------- gradients
struct _SolveFailed <: Exception
    retcode::String
end

mutable struct _SolveRecord
    stats::NTuple{4, Int}
    nsaved::Int
end

function _record!(rec::_SolveRecord, sol, nsaved::Int)
    rec.stats = _stats(sol)
    status = _status(sol, nsaved)
    status == "Success" || throw(_SolveFailed(status))
    return nothing
end
ChainRulesCore.@non_differentiable _record!(::Any, ::Any, ::Any)

"""
    PendingVJP

The forward half of a value-and-gradient: saved states and the pullback, waiting for the cotangent of the
loss with respect to the saved states (computed by the caller). Pass it to [`vjp_backward`](@ref).
"""
struct PendingVJP{F <: NeuralField, B}
    field::F
    back::B
    ysize::NTuple{3, Int}
    usize::NTuple{2, Int}
end

"""
    vjp_forward(f, opts, u0, ts) -> (pending, ys, nfe, nf, naccept, nreject, njacs, retcode, warnings)

Run the forward solve under `Zygote.pullback`, through `opts.sensealg`. `nfe` counts the vector-field
evaluations of this forward pass (for `InterpolatingAdjoint`/`QuadratureAdjoint`/`GaussAdjoint` without
checkpointing SciMLSensitivity solves densely and interpolates the save times). On failure `pending` is
`nothing` and `ys` is empty.
"""
function vjp_forward(f::NeuralField, opts::SolveOptions, u0::AbstractMatrix, ts::AbstractVector)
    U0, s, reversed = _inputs(f, u0, ts)
    prob = _problem(f, U0, s, reversed)
    rec = _SolveRecord((-1, -1, -1, -1), 0)
    nsaved = length(s)
    sensealg = opts.sensealg
    function loss_free_forward(u, p)
        sol = solve(prob, opts.alg; u0 = u, p = p, saveat = s, sensealg, opts.kwargs...)
        _record!(rec, sol, nsaved)
        return _saved(sol)
    end
    logger = WarnCollector()
    f.nfe[] = 0
    result = try
        Logging.with_logger(() -> Zygote.pullback(loss_free_forward, U0, f.p), logger)
    catch err
        err isa _SolveFailed || rethrow()
        err
    end
    nfe = f.nfe[]
    warnings = join(logger.messages, "\n")
    if result isa _SolveFailed
        return (nothing, zeros(f.eltype, 0, 0, 0), nfe, rec.stats..., result.retcode, warnings)
    end
    ys, back = result
    pending = PendingVJP(f, back, size(ys), size(U0))
    return (pending, _host(ys), nfe, rec.stats..., "Success", warnings)
end

"""
    vjp_backward(pending, cot) -> (grad_u0, grad_params, nfe_backward, warnings)

Pull the cotangent `cot` (`(D, B, T)`, the derivative of the loss with respect to the saved states) back
to `u0` (`(D, B)`) and to the parameters (canonical flat order). `nfe_backward` counts every vector-field
evaluation of the backward pass: one per VJP (two per out-of-place `EnzymeVJP` VJP), plus the extra
integrand VJPs of `QuadratureAdjoint`/`GaussAdjoint` and any forward re-solves between checkpoints.
SciMLSensitivity discards the adjoint solution (no adjoint retcode or step statistics, SciMLSensitivity
#1012), so its warnings are returned for the caller to inspect.
"""
function vjp_backward(v::PendingVJP, cot::AbstractArray)
    f = v.field
    C = _to_device(f.device, Array{f.eltype, 3}(cot))
    size(C) == v.ysize || throw(DimensionMismatch("cotangent has size $(size(C)), expected $(v.ysize)"))
    logger = WarnCollector()
    f.nfe[] = 0
    gu, gp = Logging.with_logger(() -> v.back(C), logger)
    nfe = f.nfe[]
    grad_u0 = gu === nothing ? zeros(f.eltype, v.usize) : Matrix{f.eltype}(_host(gu))
    grad_p = gp === nothing ? zeros(f.eltype, length(f.perm)) : to_canonical(f, _lux_gradient(gp, f))
    return (grad_u0, grad_p, nfe, join(logger.messages, "\n"))
end

_lux_gradient(g::ComponentArray, f::NeuralField) = _lux_gradient(getdata(g), f)
function _lux_gradient(g::AbstractArray, f::NeuralField)
    length(g) == length(f.perm) ||
        error("parameter gradient has $(length(g)) entries, expected $(length(f.perm))")
    return vec(_host(g))
end
# A structural tangent of the ComponentArray itself, `(data = ..., axes = ...)`, or a NamedTuple of layers.
_lux_gradient(g::NamedTuple, f::NeuralField) =
    haskey(g, :data) ? _lux_gradient(g.data, f) : _lux_gradient(ComponentArray(g), f)
_lux_gradient(g, ::NeuralField) = error("unexpected parameter gradient of type $(typeof(g))")

# Solving and differentiating a field (any `AbstractField`: a `NeuralField` or a `DynamicsField`).
#
# API facts relied on (each checked against the upstream source; tests/test_julia_upstream.py records, per
# upstream symbol, the releases it was checked against and fails when [compat] admits others):
# - `solve(ODEProblem{false}(ODEFunction{false}(f), u0, tspan, p), alg; saveat, tstops, reltol, abstol,
#   maxiters, sensealg)`; inside `Zygote.pullback` the `solve` call hits SciMLSensitivity's adjoint rule, which
#   keeps `sol.stats` and `sol.retcode` on the solution it returns (SciMLBase `sensitivity_solution`).
# - Every solve runs on a flat VECTOR state (`FlatRHS`): SciMLSensitivity's `ReverseDiffAdjoint` (pyneuralode's
#   `DirectAdjoint`) raises "Sensitivity algorithm ReverseDiffAdjoint only supports vector u0" for any other
#   array (src/concrete_solve.jl, every 7.x release since 2023-12), and matrix / 3-D / 4-D states are what the
#   ODE model, the CNF and the network blocks carry. The step controller's norm is elementwise, so flattening
#   changes no step.
# - `sol.stats` (`SciMLBase.DEStats`: nf, naccept, nreject, ...); `sol.destats` is gone in SciMLBase v3.
# - `successful_retcode(sol)`; comparing `sol.retcode` with a Symbol is removed in SciMLBase v3.
# - `Array(sol)` of a vector state is `(N, T)` (RecursiveArrayTools v3 and v4).
# - Stiff solvers take `autodiff = AutoForwardDiff()/AutoFiniteDiff()` (ADTypes; `Bool` rejected in v7).
# - Step-size controller: see `_controller_kwargs` (four OrdinaryDiffEqCore eras).
# - Sensitivity algorithms (SciMLSensitivity src/sensitivity_algorithms.jl): `BacksolveAdjoint(; autojacvec,
#   checkpointing = true)`, `InterpolatingAdjoint(; autojacvec, checkpointing = false)`,
#   `QuadratureAdjoint(; autojacvec, abstol = 1e-6, reltol = 1e-3)`, `GaussAdjoint(; autojacvec,
#   checkpointing = false)`, `ReverseDiffAdjoint()` (discrete adjoint: vector `u0` only, CPU arrays only --
#   hence `FlatRHS`); VJPs `ZygoteVJP()`, `ReverseDiffVJP(compile = false)`, `EnzymeVJP()`.

const FIXED_STEP = ("euler", "midpoint", "heun", "rk4")
const OWN_CONTROLLER = ("qndf", "fbdf")   # multistep methods with an integrated order/step controller
# Implicit (stiff) methods: small steps are what they are for, so the step watch's stiff-stall rule is off for them
# (its blow-up check stays), as on JAX (pyneuralode/_stepwatch.py).
const STIFF = ("implicit_euler", "kvaerno3", "kvaerno4", "kvaerno5", "kencarp3", "kencarp4", "kencarp5", "rodas5p",
    "qndf", "fbdf")

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
    name == "implicit_euler" && return ImplicitEuler(; autodiff = ad)
    name == "kvaerno3" && return Kvaerno3(; autodiff = ad)
    name == "kvaerno4" && return Kvaerno4(; autodiff = ad)
    name == "kvaerno5" && return Kvaerno5(; autodiff = ad)
    name == "kencarp3" && return KenCarp3(; autodiff = ad)
    name == "kencarp4" && return KenCarp4(; autodiff = ad)
    name == "kencarp5" && return KenCarp5(; autodiff = ad)
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
    _controller_kwargs(alg, safety, factormin, factormax)

`solve` keywords for an integral controller with pyneuralode's `StepControl` meaning (as diffrax's
`PIDController(pcoeff=0, icoeff=1)` and torchdiffeq): new `dt = dt * clamp(safety * err^(-1/k),
factormin, factormax)`, no dead band (`qsteady_min = qsteady_max = 1`) and no first-step growth beyond
`factormax`. Where the knobs live depends on the OrdinaryDiffEqCore release, so this asks the installed one
what it has rather than assuming:

- Core >= 4.0: `IController` has fields. 4.0-4.1 declare `IController(; qmin, qmax, qmax_first_step, gamma,
  qsteady_min, qsteady_max)` (one type for all six: all Float64 here); >= 4.2 has a single `basic` field and
  `IController(; kwargs...)` keeps the keywords until it is resolved against the algorithm. The same call
  fits both. Left out, `qmax_first_step` defaults to 10000 and `qsteady_max` to the algorithm's (6//5 for
  implicit methods), i.e. first-step growth and a dead band.
- Core 3.4-3.33: `IController` is field-less and a `controller` passed to `solve` has its knobs read from its
  own fields (the `solve` keywords are then ignored); `NewIController(QT, alg; ...)` holds them, with
  `qmax_first_step` from 3.10 on (the release that added the 10000x first step).
- Core 1.0-3.3: field-less `IController()`, knobs are `solve` keywords, no first-step rule.
"""
function _controller_kwargs(alg, safety::Real, factormin::Real, factormax::Real)
    qmin, qmax, gamma = Float64(factormin), Float64(factormax), Float64(safety)
    qmax_first_step = qmax
    qsteady_min = qsteady_max = 1.0
    if !isempty(fieldnames(IController))                                   # Core >= 4.0
        return (; controller = IController(; qmin, qmax, qmax_first_step, gamma, qsteady_min, qsteady_max))
    elseif isdefined(OrdinaryDiffEqCore, :NewIController)                   # Core 3.4-3.33
        NewIController = getfield(OrdinaryDiffEqCore, :NewIController)
        :qmax_first_step in fieldnames(NewIController) && return (;
            controller = NewIController(Float64, alg; qmin, qmax, qmax_first_step, gamma, qsteady_min,
                qsteady_max))
        return (; controller = NewIController(Float64, alg; qmin, qmax, gamma, qsteady_min, qsteady_max))
    end
    return (; controller = IController(), qmin, qmax, gamma, qsteady_min, qsteady_max)   # Core 1.0-3.3
end

"""
    SolveOptions

Everything about a solve except the data: algorithm, sensitivity algorithm, `solve` keywords (tolerances,
step control, `maxiters`), the element type and a fixed-step solver's `dt`. Built once per model by
[`solve_options`](@ref); [`_solve_kwargs`](@ref) adds what depends on the save times.
"""
struct SolveOptions{A, S, K <: NamedTuple}
    alg::A
    sensealg::S
    kwargs::K
    max_steps::Int
    eltype::DataType
    dt::Union{Nothing, Float64}     # the step of a fixed-step solver (see `_solve_kwargs`), else nothing
    stiff::Bool                     # an implicit method (see `STIFF`): no stiff-stall stop in the step watch
    jump_ts::Vector{Float64}        # times where the field jumps: `d_discontinuities` (see `_solve_kwargs`)
    step_ts::Vector{Float64}        # times to step onto: `tstops`
end

"""
    solve_options(; solver = "tsit5", rtol = 1e-6, atol = 1e-8, dt0 = nothing, dt = nothing, dtmax = nothing,
        max_steps = 4096, safety = 0.9, factormin = 0.2, factormax = 10.0, sensealg = "interpolating",
        vjp = "zygote", checkpointing = false, jac = "forwarddiff", dtype = "float64", jump_ts = Float64[],
        step_ts = Float64[]) -> SolveOptions

`max_steps` becomes `maxiters` (OrdinaryDiffEq counts accepted and rejected steps, as pyneuralode does).
Fixed-step solvers need `dt` (they step on pyneuralode's shared grid, see [`_solve_kwargs`](@ref)); adaptive
ones start from `dt0` when given, else from OrdinaryDiffEq's Hairer-Wanner initial step rule, and take no step
longer than `dtmax` when given (OrdinaryDiffEq's `dtmax`, which bounds the first step too). `qndf`/`fbdf`
keep their own controllers. `jump_ts` (times where the field is discontinuous) and `step_ts` (times to step
onto) apply to adaptive solvers, as OrdinaryDiffEq's `d_discontinuities` and `tstops`.
"""
function solve_options(; solver::AbstractString = "tsit5", rtol::Real = 1e-6, atol::Real = 1e-8,
        dt0 = nothing, dt = nothing, dtmax = nothing, max_steps::Integer = 4096, safety::Real = 0.9, factormin::Real = 0.2,
        factormax::Real = 10.0, sensealg::AbstractString = "interpolating", vjp::AbstractString = "zygote",
        checkpointing::Bool = false, jac::AbstractString = "forwarddiff", dtype::AbstractString = "float64",
        jump_ts = Float64[], step_ts = Float64[])
    T = _float_type(dtype)
    alg = make_alg(solver; jac)
    sa = make_sensealg(sensealg, vjp; checkpointing, rtol, atol)
    if solver in FIXED_STEP
        dt === nothing && throw(ArgumentError("$solver is a fixed-step method: give it a step dt"))
        kwargs = (; adaptive = false, maxiters = Int(max_steps))
        isempty(jump_ts) && isempty(step_ts) ||
            throw(ArgumentError("jump_ts/step_ts are for adaptive solvers; put these times in the save times"))
        return SolveOptions(alg, sa, kwargs, Int(max_steps), T, Float64(dt), solver in STIFF, Float64[], Float64[])
    end
    kwargs = (; reltol = T(rtol), abstol = T(atol), maxiters = Int(max_steps))
    # a given dt0 is clipped to dtmax here, as diffrax and torchdiffeq clip it (OrdinaryDiffEq's automatic first
    # step is clipped to dtmax by OrdinaryDiffEq itself)
    dt0 === nothing || (kwargs = merge(kwargs, (; dt = T(dtmax === nothing ? dt0 : min(dt0, dtmax)))))
    dtmax === nothing || (kwargs = merge(kwargs, (; dtmax = T(dtmax))))
    solver in OWN_CONTROLLER ||
        (kwargs = merge(kwargs, _controller_kwargs(alg, safety, factormin, factormax)))
    return SolveOptions(alg, sa, kwargs, Int(max_steps), T, nothing, solver in STIFF,
        sort(Float64.(collect(jump_ts))), sort(Float64.(collect(step_ts))))
end

# ---------------------------------------------------------------------------------------------- helpers
"""Right-hand side in reversed time, `s = -t`, so decreasing save times become an increasing solve."""
struct Reversed{F}
    f::F
end
(r::Reversed)(u, p, s) = -(r.f(u, p, -s))

"""
    FlatRHS(f, shape)

The right-hand side `f` of an array state of size `shape`, as a right-hand side of its `vec`: every solve runs on
a vector state, the one kind SciMLSensitivity's `ReverseDiffAdjoint` accepts (see the header), and the kind every
other sensitivity algorithm is tested on upstream. `reshape`/`vec` share memory on `Array`/`CuArray` and are
differentiable by Zygote, ReverseDiff (`reshape` of a `TrackedArray`, ReverseDiff src/tracked.jl) and Enzyme.
"""
struct FlatRHS{F, N}
    f::F
    shape::NTuple{N, Int}
end
(r::FlatRHS)(u, p, t) = vec(r.f(reshape(u, r.shape), p, t))

"""
    flat_problem(rhs, U0, tspan, p) -> ODEProblem

The out-of-place problem of `rhs` (on arrays shaped like `U0`) on the flat state `vec(U0)`; read its saved
states back with [`_saved`](@ref)`(sol, size(U0))`.
"""
flat_problem(rhs, U0::AbstractArray, tspan, p) =
    ODEProblem{false}(ODEFunction{false}(FlatRHS(rhs, size(U0))), vec(U0), tspan, p)

"""
    _step_grid(s, dt) -> Vector

pyneuralode's fixed-step grid (`pyneuralode._control.fixed_step_grid`, shared by every backend): each interval
between consecutive save times split into `ceil(|Δ| / dt)` equal steps (`a + i * ((b - a) / n)` as numpy's
`linspace`, the save time itself last), so every save time is a step boundary.
"""
function _step_grid(s::AbstractVector{T}, dt::Real) where {T}
    grid = T[first(s)]
    for k in 1:(length(s) - 1)
        a, b = s[k], s[k + 1]
        n = max(1, ceil(Int, abs(b - a) / dt - 1e-9))
        for i in 1:(n - 1)
            push!(grid, a + i * ((b - a) / n))
        end
        push!(grid, b)
    end
    return grid
end
ChainRulesCore.@non_differentiable _step_grid(::Any, ::Any)

"""
    _solve_kwargs(opts, s; reversed = false) -> NamedTuple

`opts.kwargs` plus what depends on the save times `s`. A fixed-step solver gets the grid of [`_step_grid`](@ref)
as `tstops` and the largest grid spacing as `dt`: OrdinaryDiffEq shortens a step that would pass the next
`tstop` to end exactly on it (OrdinaryDiffEqCore `modify_dt_for_tstops!`), so it takes exactly the grid's steps,
as diffrax (`StepTo`) and torchdiffeq (`grid_constructor`) do. `saveat` alone would only interpolate.

An adaptive solver gets the options' jump times strictly inside the solve as `d_discontinuities` (stepped onto,
then the next step starts one ULP past it with a fresh evaluation, as diffrax's `jump_ts`) and its step times as
`tstops`. `reversed`: `s` is `-t` (a decreasing solve run forward, see [`Reversed`](@ref)), so are they.
"""
function _solve_kwargs(opts::SolveOptions, s::AbstractVector; reversed::Bool = false)
    if opts.dt === nothing
        isempty(opts.jump_ts) && isempty(opts.step_ts) && return opts.kwargs
        lo, hi = extrema((first(s), last(s)))
        inside(ts) = [reversed ? -t : t for t in ts if lo < (reversed ? -t : t) < hi]
        jumps, stops = inside(opts.jump_ts), inside(opts.step_ts)
        kwargs = isempty(jumps) ? opts.kwargs : merge(opts.kwargs, (; d_discontinuities = jumps))
        return isempty(stops) ? kwargs : merge(kwargs, (; tstops = stops))
    end
    grid = _step_grid(s, opts.dt)
    return merge(opts.kwargs, (; dt = maximum(diff(grid)), tstops = grid))
end
ChainRulesCore.@non_differentiable _solve_kwargs(::Any, ::Any)

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

function _inputs(f::AbstractField, u0::AbstractMatrix, ts::AbstractVector)
    T = f.eltype
    length(ts) >= 2 || throw(ArgumentError("need at least two save times (t0 and one more)"))
    size(u0, 1) > 0 || throw(ArgumentError("empty state"))
    times = Vector{T}(ts)
    reversed = times[end] < times[1]
    s = reversed ? -times : times
    issorted(s; lt = <=) || throw(ArgumentError("save times must be strictly monotonic"))
    return _to_device(f.device, Matrix{T}(u0)), s, reversed
end

function _problem(f::AbstractField, U0, s::AbstractVector, reversed::Bool)
    rhs = reversed ? Reversed(f) : f
    return flat_problem(rhs, U0, (first(s), last(s)), f.p)
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

"""Saved states of a solve on a flat state, shaped `(shape..., T)` (`(D, B, T)` for a `(D, B)` state)."""
_saved(sol, shape::Tuple) = reshape(Array(sol), shape..., :)

# "Success", a ReturnCode name, or "SaveMismatch" (successful but not saved at every requested time).
function _status(sol, nsaved::Int)
    successful_retcode(sol) || return _retcode_name(sol.retcode)
    return length(sol.t) == nsaved ? "Success" : "SaveMismatch"
end

# ---------------------------------------------------------------------------------------------- step watch
# pyneuralode's blow-up/stiffness rule, the same on every backend (pyneuralode/_stepwatch.py documents it;
# tests/test_julia_static.py checks that these constants equal the Python ones).
const WATCH_PATIENCE = 200
const WATCH_GROWTH = 10.0
const WATCH_STARVATION = 2.0
const WATCH_FIRST_STEP_MARGIN = 100.0

"""
    StepWatch(t_end, max_steps, atol, eps)

OrdinaryDiffEq's `unstable_check(dt, u, p, t)` (called after every accepted step with the next step size `dt`)
carrying pyneuralode's rule: `true` (the solve stops with `ReturnCode.Unstable`) on a NaN state (the default
check), when `|dt| <= eps * max(|t|, |t_end|)` (blow-up), or after `WATCH_PATIENCE` consecutive steps so small
that reaching `t_end` would take more than `WATCH_STARVATION` times the steps left while `maximum(abs, u)` stayed within `WATCH_GROWTH` times its value at
the start of that run plus `atol` (stiff: `stiff` is set). OrdinaryDiffEq calls it after accepted steps only,
so here the steps counted are the accepted ones (jax and torch count rejected steps too).
"""
mutable struct StepWatch
    t_end::Float64
    max_steps::Int
    atol::Float64
    eps::Float64
    stall_is_stiffness::Bool
    steps::Int
    run::Int
    ref::Float64
    stiff::Bool
end
StepWatch(t_end, max_steps, atol, eps, stall_is_stiffness = true) =
    StepWatch(t_end, max_steps, atol, eps, stall_is_stiffness, 0, 0, 0.0, false)

function (w::StepWatch)(dt, u, p, t)
    any(isnan, u) && return true
    w.steps += 1
    h = abs(Float64(dt))
    h > w.eps * max(abs(Float64(t)), abs(w.t_end)) || return true
    if w.stall_is_stiffness && WATCH_STARVATION * h * (w.max_steps - w.steps) < abs(w.t_end - Float64(t))
        size = Float64(maximum(abs, u))
        w.run == 0 && (w.ref = size)
        w.run += 1
        if w.run >= WATCH_PATIENCE && isfinite(size) && size <= WATCH_GROWTH * (w.ref + w.atol)
            w.stiff = true
            return true
        end
    else
        w.run = 0
    end
    return false
end

# OrdinaryDiffEq's automatic first step can lie below the watch's underflow threshold (a field that vanishes at t0
# gets Hairer's 1e-6; float32 over [0, 100] has a threshold of 1.2e-5), and the watch would read the step that
# follows as a blow-up. Lift it to WATCH_FIRST_STEP_MARGIN times the threshold, as jax and torch do. The first step
# is `integrator.dt` after `init` (OrdinaryDiffEqCore's `handle_dt!` sets it there; the step loop reads it as is).
function _lift_first_step!(integrator, w::StepWatch)
    floor = WATCH_FIRST_STEP_MARGIN * w.eps * max(abs(Float64(integrator.t)), abs(w.t_end))
    abs(integrator.dt) < floor && (integrator.dt = integrator.tdir * oftype(integrator.dt, floor))
    return integrator
end

# The watch of a plain adaptive forward solve (fixed-step solves have nothing to watch). Gradient solves are
# not watched: SciMLSensitivity hands the forward keywords on to its adjoint solve, whose end differs.
_watch(f::AbstractField, opts::SolveOptions, s::AbstractVector) = haskey(opts.kwargs, :abstol) ?
    StepWatch(Float64(last(s)), opts.max_steps, Float64(opts.kwargs.abstol), Float64(eps(f.eltype)), !opts.stiff) :
    nothing

# ---------------------------------------------------------------------------------------------- forward
"""
    forward(f, opts, u0, ts) -> (ys, nfe, nf, naccept, nreject, njacs, retcode, warnings)

Solve from `u0` (`(D, B)`) at `ts[1]`, saving at every `ts` (increasing or decreasing). `ys` is
`(D, B, length(ts))` on the host (empty when the solve failed: check `retcode`), `nfe` the counted
vector-field evaluations, `nf, naccept, nreject, njacs` from `sol.stats`, `retcode` a `ReturnCode` name (or
`"Stiff"` when the [`StepWatch`](@ref) stopped an adaptive solve as stiff), `warnings` the Julia warnings logged
during the solve (newline-separated).
"""
function forward(f::AbstractField, opts::SolveOptions, u0::AbstractMatrix, ts::AbstractVector)
    U0, s, reversed = _inputs(f, u0, ts)
    prob = _problem(f, U0, s, reversed)
    logger = WarnCollector()
    f.nfe[] = 0
    watch = _watch(f, opts, s)
    kwargs = _solve_kwargs(opts, s; reversed)
    watch === nothing || (kwargs = merge(kwargs, (; unstable_check = watch)))
    sol = Logging.with_logger(logger) do
        watch === nothing && return solve(prob, opts.alg; saveat = s, kwargs...)
        solve!(_lift_first_step!(init(prob, opts.alg; saveat = s, kwargs...), watch))
    end
    nfe = f.nfe[]
    ok = successful_retcode(sol) && length(sol.t) == length(s)
    ys = ok ? _host(_saved(sol, size(U0))) : zeros(f.eltype, 0, 0, 0)
    status = watch !== nothing && watch.stiff ? "Stiff" : _status(sol, length(s))
    return (ys, nfe, _stats(sol)..., status, join(logger.messages, "\n"))
end

"""
    EventCondition(ev, reversed, signs, arm, sigma)

The condition of a terminating event for OrdinaryDiffEq's `ContinuousCallback`: the event function `ev` (a
[`DynamicsField`](@ref) generated from the traced `pn.Event`, with one number or a vector of conditions as its
value) at one sample, with its own copy of the canonical parameters `ev.p`, combined into the one function
`minimum(max.(sigma .* (arm .- t), signs .* g))` whose first zero is the earliest crossing that counts (pyneuralode's
`_events` module explains `signs` and `arm`; `sigma` is the sign of `t1 - t0`). `reversed`: the solve runs in
`s = -t` (see [`Reversed`](@ref)), so the function is read at `t = -s`.
"""
struct EventCondition{E, V}
    ev::E
    reversed::Bool
    signs::V
    arm::V
    sigma::Float64
end
function (c::EventCondition)(u, s, integrator)
    t = c.reversed ? -s : s
    g = event_value(c.ev, u, t)
    return minimum(max.(c.sigma .* (c.arm .- t), c.signs .* vec([g;])))
end

_terminate!(integrator) = terminate!(integrator)

"""
    event_forward(f, ev, opts, u0, t0, t1, signs, arm) -> (t, y, occurred, nfe, nf, naccept, nreject, njacs, retcode, warnings)

Solve from one state `u0` (`(D,)`) at `t0` towards `t1` until the combined function of the event's conditions
(see [`EventCondition`](@ref)) changes sign (OrdinaryDiffEq's `ContinuousCallback` with `terminate!` as the affect
for up- and down-crossings; its root find locates the time to near machine precision), or until `t1`. `occurred` is whether the callback ended
the solve (`ReturnCode.Terminated`); `t`, `y` the time and state where the solve ended. Counts as [`forward`](@ref).
"""
function event_forward(f::AbstractField, ev, opts::SolveOptions, u0::AbstractVector, t0::Real, t1::Real,
        signs::AbstractVector, arm::AbstractVector)
    U0, s, reversed = _inputs(f, reshape(u0, :, 1), [t0, t1])
    prob = _problem(f, U0, s, reversed)
    condition = EventCondition(ev, reversed, Vector{Float64}(signs), Vector{Float64}(arm), Float64(sign(t1 - t0)))
    callback = ContinuousCallback(condition, _terminate!)
    logger = WarnCollector()
    f.nfe[] = 0
    sol = Logging.with_logger(logger) do
        solve(prob, opts.alg; callback, save_everystep = false, save_start = false, save_end = true,
            _solve_kwargs(opts, s; reversed)...)
    end
    nfe = f.nfe[]
    occurred = sol.retcode == ReturnCode.Terminated
    ok = occurred || successful_retcode(sol)
    t = isempty(sol.t) ? oftype(float(t1), NaN) : (reversed ? -last(sol.t) : last(sol.t))
    y = ok && !isempty(sol.u) ? Vector{f.eltype}(_host(last(sol.u))) : zeros(f.eltype, 0)
    status = occurred ? "Success" : _retcode_name(sol.retcode)
    return (t, y, occurred, nfe, _stats(sol)..., status, join(logger.messages, "\n"))
end

"""
    _EnsembleMember(ps, u0s)

The `prob_func` of an ensemble: trajectory `i` is the template problem `remake`d with `u0s[i]` and `ps[i]`.
SciMLBase 2.x calls `prob_func(prob, i, repeat)`; SciMLBase 3.x calls `prob_func(prob, ctx)` with an
`EnsembleContext` whose `sim_id` is the trajectory index (src/ensemble/basic_ensemble_solve.jl): both are methods.
"""
struct _EnsembleMember{P, U}
    ps::P
    u0s::U
end
(m::_EnsembleMember)(prob, i::Integer, repeat) = remake(prob; u0 = m.u0s[i], p = m.ps[i])
(m::_EnsembleMember)(prob, ctx) = m(prob, ctx.sim_id, ctx.repeat)

"""
    ensemble_forward(f, opts, P, U0, ts) -> (ys, stats, statuses)

An ensemble: member `i` is its own trajectory of `f` with the canonical parameters `P[:, i]` from the state
`U0[:, i]` (`P` is `(nparams, M)`, `U0` is `(D, M)`), solved as SciMLBase's `EnsembleProblem` with
`EnsembleThreads()` (members spread over Julia's threads), `remake` giving each member its `u0` and `p`. Each
member takes its own adaptive steps. `ys` is `(D, length(ts), M)` on the host, NaN where a member failed;
`stats` is `(3, M)`: `nf, naccept, nreject` of each member's `sol.stats` (the field's own counter is shared
by the threads, so it cannot attribute evaluations to members); `statuses` the members' return-code names.
"""
function ensemble_forward(f::AbstractField, opts::SolveOptions, P::AbstractMatrix, U0::AbstractMatrix,
        ts::AbstractVector)
    M = size(P, 2)
    ps = map(1:M) do i        # each member's parameters in the field's own layout (set_params! translates)
        set_params!(f, P[:, i])
        copy(f.p)
    end
    U1, s, reversed = _inputs(f, U0[:, 1:1], ts)
    prob = _problem(f, U1, s, reversed)
    u0s = [vec(_to_device(f.device, Matrix{f.eltype}(U0[:, i:i]))) for i in 1:M]
    eprob = EnsembleProblem(prob; prob_func = _EnsembleMember(ps, u0s), safetycopy = false)
    esol = solve(eprob, opts.alg, EnsembleThreads(); trajectories = M, saveat = s,
        _solve_kwargs(opts, s; reversed)...)
    D, T = size(U0, 1), length(s)
    ys = fill(f.eltype(NaN), D, T, M)
    stats = zeros(Int, 3, M)
    statuses = Vector{String}(undef, M)
    for i in 1:M
        sol = esol.u[i]
        statuses[i] = _status(sol, T)
        nf, naccept, nreject, _ = _stats(sol)
        stats[:, i] .= (nf, naccept, nreject)
        if statuses[i] == "Success"
            ys[:, :, i] .= reshape(_host(_saved(sol, (D, 1))), D, T)
        end
    end
    return (ys, stats, statuses)
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
    _failure(err, prob, opts, s; reversed = false) -> Union{_SolveFailed, Nothing}

What an exception thrown by a differentiated solve means. `_SolveFailed` is ours (`_record!` saw the return code).
Anything else may still be a failed solve in disguise: without checkpointing, `InterpolatingAdjoint`,
`QuadratureAdjoint` and `GaussAdjoint` solve densely without `saveat` and then interpolate the save times
(`_out = sol(ts)` in SciMLSensitivity src/concrete_solve.jl), so a solve that stopped early (MaxIters,
Unstable) raises SciMLBase's "Solution interpolation cannot extrapolate past the final timepoint" before
`_record!` runs. Then this re-solves `prob` without AD (only on this error path) and returns the failure its
return code names, or `nothing` if that solve succeeds (a genuine error: the caller rethrows it).
"""
function _failure(err, prob, opts::SolveOptions, s::AbstractVector; reversed::Bool = false)
    err isa _SolveFailed && return err
    sol = solve(prob, opts.alg; saveat = s, _solve_kwargs(opts, s; reversed)...)
    status = _status(sol, length(s))
    return status == "Success" ? nothing : _SolveFailed(status)
end

"""
    PendingVJP

The forward half of a value-and-gradient: saved states and the pullback, waiting for the cotangent of the
loss with respect to the saved states (computed by the caller). Pass it to [`vjp_backward`](@ref).
"""
struct PendingVJP{F <: AbstractField, B}
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
function vjp_forward(f::AbstractField, opts::SolveOptions, u0::AbstractMatrix, ts::AbstractVector)
    U0, s, reversed = _inputs(f, u0, ts)
    prob = _problem(f, U0, s, reversed)
    rec = _SolveRecord((-1, -1, -1, -1), 0)
    nsaved = length(s)
    sensealg = opts.sensealg
    kwargs = _solve_kwargs(opts, s; reversed)
    function loss_free_forward(u, p)
        sol = solve(prob, opts.alg; u0 = vec(u), p = p, saveat = s, sensealg, kwargs...)
        _record!(rec, sol, nsaved)
        return _saved(sol, size(u))
    end
    logger = WarnCollector()
    f.nfe[] = 0
    result = try
        Logging.with_logger(() -> Zygote.pullback(loss_free_forward, U0, f.p), logger)
    catch err
        failed = Logging.with_logger(() -> _failure(err, prob, opts, s; reversed), logger)
        failed === nothing && rethrow()
        failed
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
    grad_p = gp === nothing ? zeros(f.eltype, num_parameters(f)) : canonical_gradient(f, gp)
    return (grad_u0, grad_p, nfe, join(logger.messages, "\n"))
end

"""
    canonical_gradient(f, g) -> Vector

The parameter gradient `g` that SciMLSensitivity/Zygote return for `f.p`, in pyneuralode's canonical order.
"""
canonical_gradient(f::NeuralField, g) = to_canonical(f, _lux_gradient(g, f))

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

# Latent ODEs: pyneuralode's `LatentODE` (pyneuralode/_latent.py) on four `NeuralField`s.
#
# The model is four spec networks, each built by `build_field` from the description the Python side writes
# (`describe_spec`: pyneuralode's `RNNCell` expands to `Linear([x, Δt, h] -> hidden)` + `Activation`, so the
# cell needs no layer of its own), in canonical parameter order: encoder (the recognition cell), head
# (`h -> [μ; log σ_q²]`), field (the latent vector field, the only one an ODE solver calls, so its counter
# is the exact NFE of the latent solve), decoder (`z -> x`). Each keeps its own canonical <-> Lux map.
#
# Layouts (transposes of the JAX/torch ones): observations `x` are `(D, B, T)` on the union of times `ts`
# (zeros where unobserved: the Python side replaces them), `mask` is `(B, T)` (true where observed), `ε` and
# the posterior are `(L, B)`, latent paths `(L, B, T)`, predictions `(D, B, T)`.
#
# Same numbers as JAX/torch (pyneuralode/backends/jax/_latent.py): the cell runs backwards over the union of
# times, updating a series only at its own observations, with the time since the observation read before it
# (0 for the first one read); `z(t0) = μ + exp(log σ_q² / 2) ε` with the caller's fixed ε; the latent solve
# saves at `ts`; `ll = Σ_observed log N(x; decoder(z), σ² I)`, `kl = ½ Σ (μ² + σ_q² - log σ_q² - 1)`;
# loss = -mean(ll - kl). The gradient is one `Zygote.pullback` over the four parameter vectors, the solve
# going through `opts.sensealg` exactly as `vjp_forward` (solve.jl) does.

"""
    LatentModel

A latent ODE on four [`NeuralField`](@ref)s: `encoder` (input `[x; Δt; h]`, output the new state `h`),
`head` (`h -> [μ; log σ_q²]`), `field` (the latent vector field) and `decoder` (`z -> x`), plus `latent`
(`L`), `hidden` (the RNN state size), `noise_std` (σ of the Gaussian likelihood) and `sizes` (each part's number
of canonical parameters, in that order).
"""
struct LatentModel{E <: NeuralField, H <: NeuralField, F <: NeuralField, D <: NeuralField}
    encoder::E
    head::H
    field::F
    decoder::D
    latent::Int
    hidden::Int
    noise_std::Float64
    sizes::NTuple{4, Int}
end

_latent_parts(m::LatentModel) = (m.encoder, m.head, m.field, m.decoder)

"""
    build_latent(encoder, head, field, decoder, flat; latent, hidden, noise_std, dtype = "float64") -> LatentModel

The latent ODE of four spec descriptions (see [`parse_spec`](@ref)) with canonical flat parameters `flat`
(encoder, head, field, decoder concatenated in that order). CPU only.
"""
function build_latent(encoder::AbstractString, head::AbstractString, field::AbstractString,
        decoder::AbstractString, flat::AbstractVector; latent::Integer, hidden::Integer, noise_std::Real,
        dtype::AbstractString = "float64")
    parts = map((encoder, head, field, decoder)) do description
        n = sum(num_params, parse_spec(description))
        build_field(description, zeros(n); dtype, device = "cpu")
    end
    sizes = map(num_parameters, parts)
    noise_std > 0 || throw(ArgumentError("noise_std must be > 0, got $noise_std"))
    m = LatentModel(parts..., Int(latent), Int(hidden), Float64(noise_std), sizes)
    return set_latent_params!(m, flat)
end

"""
    set_latent_params!(m::LatentModel, flat) -> m

Load canonical flat parameters (the four parts concatenated) into the parts, each in its Lux layout.
"""
function set_latent_params!(m::LatentModel, flat::AbstractVector)
    length(flat) == sum(m.sizes) ||
        throw(DimensionMismatch("expected $(sum(m.sizes)) parameters, got $(length(flat))"))
    offset = 0
    for (part, n) in zip(_latent_parts(m), m.sizes)
        set_params!(part, flat[(offset + 1):(offset + n)])
        offset += n
    end
    return m
end

"""
    get_latent_params(m::LatentModel) -> Vector

The canonical flat parameters of the four parts, concatenated in canonical order (layout round trip).
"""
get_latent_params(m::LatentModel) = reduce(vcat, map(get_params, _latent_parts(m)))

# ---------------------------------------------------------------------------------------------- data
"""
    LatentData

The constants of one batch, built once outside AD: `x` (`(D, B, T)`, observed values, 0 elsewhere), `mask`
(`(1, B, T)`, 1 where observed), `inputs[k]` (`[x_k; Δt_k]`, `(D + 1, B)`, the cell's input at time `k` less
the state), `rows[k]` (`(1, B)`, the mask at time `k`), `s` (the union of times).
"""
struct LatentData{T, A <: AbstractArray{T, 3}}
    x::A
    mask::A
    inputs::Vector{Matrix{T}}
    rows::Vector{Matrix{T}}
    s::Vector{T}
end

function _latent_data(m::LatentModel, ts::AbstractVector, x::AbstractArray, mask::AbstractMatrix)
    T = m.field.eltype
    s = Vector{T}(ts)
    X = Array{T, 3}(x)
    M = Matrix{Bool}(mask)
    _, B, n = size(X)
    length(s) == n || throw(DimensionMismatch("x has $n times, ts has $(length(s))"))
    size(M) == (B, n) || throw(DimensionMismatch("mask has size $(size(M)), expected $((B, n))"))
    (n >= 1 && all(>(0), diff(s))) || throw(ArgumentError("ts must be strictly increasing"))
    # the gap to the observation read before (the cell reads backwards): as the JAX scan's `dt`
    gaps = zeros(T, B, n)
    for b in 1:B
        seen, t_prev = false, zero(T)
        for k in n:-1:1
            gaps[b, k] = seen ? t_prev - s[k] : zero(T)
            if M[b, k]
                seen, t_prev = true, s[k]
            end
        end
    end
    Mf = reshape(T.(M), 1, B, n)
    inputs = [vcat(X[:, :, k], reshape(gaps[:, k], 1, B)) for k in 1:n]
    rows = [Mf[:, :, k] for k in 1:n]
    return LatentData(X, Mf, inputs, rows, s)
end

# Constants of the batch as AD sees them: never differentiated.
_observed(d::LatentData) = d.x
_mask(d::LatentData) = d.mask
_cell_input(d::LatentData, k::Int) = d.inputs[k]
_mask_row(d::LatentData, k::Int) = d.rows[k]
ChainRulesCore.@non_differentiable _observed(::Any)
ChainRulesCore.@non_differentiable _mask(::Any)
ChainRulesCore.@non_differentiable _cell_input(::Any, ::Any)
ChainRulesCore.@non_differentiable _mask_row(::Any, ::Any)

# One evaluation of a part without a time input (the JAX/torch programs pass t = 0).
_apply_part(f::NeuralField, u, p) = f(u, p, zero(f.eltype))

# ---------------------------------------------------------------------------------------------- the model
"""
    _latent_encode(m, d, pe, ph) -> (mean, log_var)

The recognition model with encoder parameters `pe` and head parameters `ph` (Lux layout): the cell from
`h = 0` backwards over the union of times, a series' state replaced by the cell's output only where it is
observed (`row .* new + (1 - row) .* h` with a 0/1 row: exactly `new` or `h`, as JAX's `where`), then the
head. Both `(L, B)`.
"""
function _latent_encode(m::LatentModel, d::LatentData, pe, ph)
    T = m.field.eltype
    n = length(d.s)
    h = zeros(T, m.hidden, size(d.x, 2))
    for k in n:-1:1
        row = _mask_row(d, k)
        new = _apply_part(m.encoder, vcat(_cell_input(d, k), h), pe)
        h = row .* new .+ (one(T) .- row) .* h
    end
    q = _apply_part(m.head, h, ph)
    return q[1:(m.latent), :], q[(m.latent + 1):end, :]
end

_latent_z0(mean, log_var, E) = mean .+ exp.(log_var ./ 2) .* E

"""`(D, B, T)` decoded from latent states `(L, B, T)` (one decoder call over all `B * T` columns)."""
function _latent_decode(m::LatentModel, Z::AbstractArray{<:Any, 3}, pd)
    L, B, n = size(Z)
    out = _apply_part(m.decoder, reshape(Z, L, B * n), pd)
    return reshape(out, size(out, 1), B, n)
end

"""`Σ_observed log N(x; pred, σ² I)` per series (length `B`), as pyneuralode's `gaussian_log_likelihood`."""
function _latent_log_likelihood(m::LatentModel, d::LatentData, pred)
    T = m.field.eltype
    sigma = T(m.noise_std)
    c = T(log(m.noise_std) + 0.5 * log(2 * pi))
    per_point = -((_observed(d) .- pred) ./ sigma) .^ 2 ./ 2 .- c
    return vec(sum(sum(per_point; dims = 1) .* _mask(d); dims = 3))
end

"""`KL(N(mean, exp(log_var)) || N(0, I))` per series, as pyneuralode's `normal_kl`."""
_latent_kl(mean, log_var) = vec(sum(mean .* mean .+ exp.(log_var) .- log_var .- 1; dims = 1)) ./ 2

function _latent_eps(m::LatentModel, eps::AbstractMatrix, B::Int)
    size(eps) == (m.latent, B) || throw(DimensionMismatch("eps has size $(size(eps)), expected $((m.latent, B))"))
    return Matrix{m.field.eltype}(eps)
end

# ---------------------------------------------------------------------------------------------- entry points
"""
    latent_encode(m, ts, x, mask) -> (mean, log_var)

The posterior `q(z(t0) | x)` of each series: `mean` and `log_var`, both `(L, B)`. `x` is `(D, B, T)` on the
union of times `ts` (length `T`), `mask` `(B, T)`.
"""
function latent_encode(m::LatentModel, ts::AbstractVector, x::AbstractArray, mask::AbstractMatrix)
    d = _latent_data(m, ts, x, mask)
    mean, log_var = _latent_encode(m, d, m.encoder.p, m.head.p)
    return (Matrix(mean), Matrix(log_var))
end

"""
    latent_predict(m, opts, ts, x, mask, pred_ts, eps) -> (pred, nfe, nf, naccept, nreject, njacs, retcode, warnings)

Decoded predictions `(D, B, length(pred_ts))` from `z(t0) = μ + σ_q ε` (`eps` `(L, B)`), the latent path
solved by [`forward`](@ref) (the ODE model's own forward solve, step watch included) at the increasing
`pred_ts` (`pred_ts[1] == ts[1]`). Counts and `retcode` as `forward`; on failure `pred` is empty.
"""
function latent_predict(m::LatentModel, opts::SolveOptions, ts::AbstractVector, x::AbstractArray,
        mask::AbstractMatrix, pred_ts::AbstractVector, eps::AbstractMatrix)
    T = m.field.eltype
    d = _latent_data(m, ts, x, mask)
    B = size(d.x, 2)
    mean, log_var = _latent_encode(m, d, m.encoder.p, m.head.p)
    z0 = _latent_z0(mean, log_var, _latent_eps(m, eps, B))
    if length(pred_ts) == 1
        m.field.nfe[] = 0
        return (_latent_decode(m, reshape(z0, m.latent, B, 1), m.decoder.p), 0, 0, 0, 0, 0, "Success", "")
    end
    (Z, nfe, nf, naccept, nreject, njacs, status, warnings) = forward(m.field, opts, z0, pred_ts)
    status == "Success" || return (zeros(T, 0, 0, 0), nfe, nf, naccept, nreject, njacs, status, warnings)
    return (_latent_decode(m, Z, m.decoder.p), nfe, nf, naccept, nreject, njacs, status, warnings)
end

"""
    latent_value_and_grad(m, opts, ts, x, mask, eps) ->
        (value, ll, kl, grad_params, nfe_forward, nf, naccept, nreject, njacs, retcode, warnings,
         nfe_backward, backward_warnings)

`-mean ELBO` of the batch, the per-series log-likelihood `ll` and `kl` (length `B`), and the gradient with
respect to the canonical flat parameters (encoder, head, field, decoder), with the caller's fixed `eps`
(`(L, B)`). One `Zygote.pullback` over the four parts' parameters; the latent solve (saved at `ts`) goes
through `opts.sensealg` as in [`vjp_forward`](@ref). `nfe_forward`/`nfe_backward` count the latent field's
evaluations (the other parts are not ODE right-hand sides). On a failed forward solve `retcode` says why and
the arrays are empty.
"""
function latent_value_and_grad(m::LatentModel, opts::SolveOptions, ts::AbstractVector, x::AbstractArray,
        mask::AbstractMatrix, eps::AbstractMatrix)
    T = m.field.eltype
    d = _latent_data(m, ts, x, mask)
    L, B, n = m.latent, size(d.x, 2), length(d.s)
    E = _latent_eps(m, eps, B)
    s = d.s
    # The problem is built from the actual z(t0) (plain forward pass, no AD), so that `_failure` can re-solve it.
    mean0, log_var0 = _latent_encode(m, d, m.encoder.p, m.head.p)
    Z0 = _latent_z0(mean0, log_var0, E)
    prob = n == 1 ? nothing : flat_problem(m.field, Z0, (first(s), last(s)), m.field.p)
    rec = _SolveRecord(n == 1 ? (0, 0, 0, 0) : (-1, -1, -1, -1), 0)
    sensealg = opts.sensealg
    kwargs = n == 1 ? opts.kwargs : _solve_kwargs(opts, s)   # one time: no solve (and no fixed-step grid)
    function latent_path(z0, pf)
        n == 1 && return reshape(z0, L, B, 1)
        sol = solve(prob, opts.alg; u0 = vec(z0), p = pf, saveat = s, sensealg, kwargs...)
        _record!(rec, sol, n)
        return _saved(sol, (L, B))
    end
    function objective(pe, ph, pf, pd)
        mean, log_var = _latent_encode(m, d, pe, ph)
        Z = latent_path(_latent_z0(mean, log_var, E), pf)
        ll = _latent_log_likelihood(m, d, _latent_decode(m, Z, pd))
        kl = _latent_kl(mean, log_var)
        return -sum(ll .- kl) / B, (ll, kl)
    end
    logger = WarnCollector()
    m.field.nfe[] = 0
    result = try
        Logging.with_logger(() -> Zygote.pullback(objective, m.encoder.p, m.head.p, m.field.p, m.decoder.p),
            logger)
    catch err
        prob === nothing && rethrow()
        failed = Logging.with_logger(() -> _failure(err, prob, opts, s), logger)
        failed === nothing && rethrow()
        failed
    end
    nfe_f = m.field.nfe[]
    warnings = join(logger.messages, "\n")
    if result isa _SolveFailed
        empty = zeros(T, 0)
        return (zero(T), empty, empty, empty, nfe_f, rec.stats..., result.retcode, warnings, 0, "")
    end
    (value, (ll, kl)), back = result
    logger_b = WarnCollector()
    m.field.nfe[] = 0
    grads = Logging.with_logger(() -> back((one(T), nothing)), logger_b)
    nfe_b = m.field.nfe[]
    grad = reduce(vcat, map(_latent_part_gradient, _latent_parts(m), grads))
    return (T(value), Vector{T}(ll), Vector{T}(kl), grad, nfe_f, rec.stats..., "Success", warnings, nfe_b,
        join(logger_b.messages, "\n"))
end

_latent_part_gradient(f::NeuralField, g) =
    g === nothing ? zeros(f.eltype, num_parameters(f)) : canonical_gradient(f, g)

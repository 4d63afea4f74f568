# The network spec, mirrored from pyneuralode/_layers.py, and its Lux model.
#
# One spec layer is one Lux layer: spec layer k (1-based, in the expanded Sequential) is `layer_k` of the
# model's parameter and state NamedTuples. Only `Linear` carries parameters, so the canonical flat vector
# (per Linear: weight (out, in) row-major, then bias) follows the order of the `LinearSpec`s.

"""Abstract type of one layer of a pyneuralode spec."""
abstract type LayerSpec end

"""
    LinearSpec(in, out, bias, time_input)

`y = W x + b` with `W` of shape `(out, in + time_input)`; with `time_input` the scalar time is appended as
the last input feature (pyneuralode's `Linear(time_input=True)`).
"""
struct LinearSpec <: LayerSpec
    in::Int
    out::Int
    bias::Bool
    time_input::Bool
end

"""
    ActivationSpec(name)

A pointwise function from pyneuralode's `ACTIVATIONS`.
"""
struct ActivationSpec <: LayerSpec
    name::String
end

"""
    ConcatSquashSpec(in, out)

FFJORD's `ConcatSquashLinear` (pyneuralode's `ConcatSquash`): `(W y + b) .* sigmoid(W_g t + b_g) + W_h t`.
Canonical parameters, in order: `weight (out, in)` row-major, `bias (out,)`, `gate_weight (out, 1)`,
`gate_bias (out,)`, `hyper_bias_weight (out, 1)` (pyneuralode/_concat_squash.py).
"""
struct ConcatSquashSpec <: LayerSpec
    in::Int
    out::Int
end

fan_in(s::LinearSpec) = s.in + Int(s.time_input)
num_params(s::LinearSpec) = s.out * fan_in(s) + (s.bias ? s.out : 0)
num_params(s::ConcatSquashSpec) = s.out * s.in + 4 * s.out
num_params(::ActivationSpec) = 0

"""
    parse_spec(description) -> Vector{LayerSpec}

Parse the compact description the Python side writes: layers separated by `;`, each either
`linear,IN,OUT,BIAS,TIME` (`BIAS`, `TIME` are `0`/`1`), `squash,IN,OUT` ([`ConcatSquashSpec`](@ref)) or
`act,NAME`. Example:
`"act,cube;linear,2,50,1,0;act,tanh;linear,50,2,1,0"` is `pn.MLP([2, 50, 2], input_transform="cube")`.
"""
function parse_spec(description::AbstractString)
    layers = LayerSpec[]
    for item in split(description, ';'; keepempty = false)
        parts = split(strip(item), ',')
        kind = first(parts)
        if kind == "linear" && length(parts) == 5
            nin, nout = parse(Int, parts[2]), parse(Int, parts[3])
            (nin > 0 && nout > 0) || throw(ArgumentError("Linear sizes must be positive in $(repr(item))"))
            push!(layers, LinearSpec(nin, nout, _flag(parts[4]), _flag(parts[5])))
        elseif kind == "squash" && length(parts) == 3
            nin, nout = parse(Int, parts[2]), parse(Int, parts[3])
            (nin > 0 && nout > 0) || throw(ArgumentError("ConcatSquash sizes must be positive in $(repr(item))"))
            push!(layers, ConcatSquashSpec(nin, nout))
        elseif kind == "act" && length(parts) == 2
            name = String(parts[2])
            haskey(ACTIVATIONS, name) ||
                throw(ArgumentError("unknown activation $(repr(name)); known: $(join(sort!(collect(keys(ACTIVATIONS))), ", "))"))
            push!(layers, ActivationSpec(name))
        else
            throw(ArgumentError("cannot parse layer description $(repr(item))"))
        end
    end
    isempty(layers) && throw(ArgumentError("empty network description"))
    return layers
end

function _flag(s::AbstractString)
    s == "1" && return true
    s == "0" && return false
    throw(ArgumentError("expected 0 or 1, got $(repr(s))"))
end

# ---------------------------------------------------------------------------------------------- activations
# Written out rather than taken from NNlib: Lux's Dense swaps `tanh`/`sigmoid` for `tanh_fast`/
# `sigmoid_fast` (NNlib.fast_act, a few eps off), and the other backends compute these exact formulas.
# Every branch is overflow-free so reverse-mode AD never meets `Inf * 0`.
_relu(x::Real) = ifelse(x > zero(x), x, zero(x))
function _sigmoid(x::Real)
    e = exp(-abs(x))
    return ifelse(x >= zero(x), inv(one(x) + e), e / (one(x) + e))
end
_softplus(x::Real) = log1p(exp(-abs(x))) + _relu(x)          # == log(1 + exp(x)) == logaddexp(x, 0)
_elu(x::Real) = ifelse(x > zero(x), x, expm1(min(x, zero(x))))  # torch.nn.ELU(alpha=1)
_silu(x::Real) = x * _sigmoid(x)
_cube(x::Real) = x * x * x                                      # the paper's spiral field f(y) = MLP(y^3)
_rbf(x::Real) = exp(-(x * x))                                   # the UDE tutorials' radial basis exp(-x^2)

"""Activation names (pyneuralode's `ACTIVATIONS`) and the scalar functions they broadcast."""
const ACTIVATIONS = Dict{String, Function}(
    "tanh" => tanh, "relu" => _relu, "softplus" => _softplus, "sigmoid" => _sigmoid,
    "elu" => _elu, "silu" => _silu, "cube" => _cube, "rbf" => _rbf, "identity" => identity,
)

# Derivatives, for the forward-mode directional derivatives of a CNF's trace (cnf.jl). Written so that
# reverse-mode AD through them (the CNF's gradient is second order in the field) meets no `Inf * 0` either.
_dtanh(x::Real) = one(x) - tanh(x)^2
_drelu(x::Real) = ifelse(x > zero(x), one(x), zero(x))
function _dsigmoid(x::Real)
    s = _sigmoid(x)
    return s * (one(x) - s)
end
_delu(x::Real) = ifelse(x > zero(x), one(x), exp(min(x, zero(x))))
function _dsilu(x::Real)
    s = _sigmoid(x)
    return s + x * s * (one(x) - s)
end
_dcube(x::Real) = 3 * x * x
_drbf(x::Real) = -2 * x * exp(-(x * x))
_didentity(x::Real) = one(x)

"""The derivative of each activation in [`ACTIVATIONS`](@ref), by the same names (softplus' = sigmoid)."""
const ACTIVATION_DERIVATIVES = Dict{String, Function}(
    "tanh" => _dtanh, "relu" => _drelu, "softplus" => _sigmoid, "sigmoid" => _dsigmoid,
    "elu" => _delu, "silu" => _dsilu, "cube" => _dcube, "rbf" => _drbf, "identity" => _didentity,
)

"""
    Pointwise(σ, dσ)

A parameter-free Lux layer applying the scalar function `σ` elementwise (no `NNlib.fast_act` swap); `dσ`
is its derivative, used only for directional derivatives ([`spec_jvp`](@ref)).
"""
struct Pointwise{F, G} <: AbstractLuxLayer
    σ::F
    dσ::G
end

(l::Pointwise)(x::AbstractArray, ps, st::NamedTuple) = (l.σ.(x), st)

"""
    ConcatSquashLayer(in, out)

The Lux layer of a [`ConcatSquashSpec`](@ref). Its parameters are `weight (out, in)`, `bias`, `gate_weight`,
`gate_bias`, `hyper_bias_weight` (all `(out,)` vectors but the weight; the canonical `(out, 1)` matrices
hold the same numbers in the same order). It needs the time, so [`SpecNet`](@ref) calls it through
`_layer_apply` rather than as `layer(x, ps, st)`.
"""
struct ConcatSquashLayer <: AbstractLuxLayer
    in::Int
    out::Int
end

# LuxCore's documented hook (`initialparameters(rng, layer)`); states default to `NamedTuple()`. Values are
# placeholders: only the axes are kept, every number comes from the canonical flat vector.
function LuxCore.initialparameters(::AbstractRNG, l::ConcatSquashLayer)
    return (weight = zeros(Float32, l.out, l.in), bias = zeros(Float32, l.out),
        gate_weight = zeros(Float32, l.out), gate_bias = zeros(Float32, l.out),
        hyper_bias_weight = zeros(Float32, l.out))
end

_squash_gate(ps, t) = _sigmoid.(ps.gate_weight .* t .+ ps.gate_bias)
_squash_value(x, t, ps) = (ps.weight * x .+ ps.bias) .* _squash_gate(ps, t) .+ ps.hyper_bias_weight .* t

_layer_apply(layer, x, t, ps, st) = first(layer(x, ps, st))
_layer_apply(::ConcatSquashLayer, x, t, ps, st) = _squash_value(x, t, ps)

# ---------------------------------------------------------------------------------------------- the model
"""
    SpecNet(layers::NamedTuple, time_input::NTuple{N, Bool})

A Lux layer running `layers` in order on an input `(u, t)`; before layer `k` with `time_input[k]` the row
`t` is appended to the features (the time row enters exactly where the spec says, not only at the first
layer). Parameters and states are those of `layers` (`layer_1`, `layer_2`, ...), unwrapped
(`AbstractLuxWrapperLayer`, LuxCore >= 1).
"""
struct SpecNet{TI, L <: NamedTuple} <: AbstractLuxWrapperLayer{:layers}
    layers::L
end

function SpecNet(layers::NamedTuple, time_input::Tuple{Vararg{Bool}})
    length(layers) == length(time_input) ||
        throw(ArgumentError("one time_input flag per layer is needed"))
    return SpecNet{time_input, typeof(layers)}(layers)
end

function (m::SpecNet{TI})(ut::Tuple{Any, Any}, ps, st::NamedTuple) where {TI}
    u, t = ut
    return _apply_spec(Val(TI), m.layers, u, t, ps, st), st
end

# Unrolled like Lux's own `applychain`: one statement per layer, type-stable, AD-friendly.
@generated function _apply_spec(::Val{TI}, layers::NamedTuple{names}, x, t, ps, st) where {TI, names}
    body = Expr[]
    for (k, name) in enumerate(names)
        if TI[k]
            push!(body, :(x = vcat(x, _time_row(x, t))))
        end
        push!(body, :(x = _layer_apply(layers.$name, x, t, ps.$name, st.$name)))
    end
    return Expr(:block, body..., :(return x))
end

# ---------------------------------------------------------------------------------------------- directional derivatives
# Forward-mode derivatives of the spec network with respect to its state input, written as plain array code
# (matrix products and broadcasts) so that reverse-mode AD (Zygote, ReverseDiff) differentiates them like any
# other layer: a CNF's trace needs d/dz of the field, and its gradient then differentiates that once more.
# `V` holds K directions: `V[:, b, k]` is a tangent of sample `b`'s state; the time input has tangent 0.

"""`W * V` for each of the K directions of `V` (`(n, B, K)` -> `(m, B, K)`)."""
_matmul3(W, V::AbstractArray{<:Any, 3}) = reshape(W * reshape(V, size(V, 1), :), size(W, 1), size(V, 2), size(V, 3))

"""A constant zero row under the K directions (the tangent of the appended time input)."""
_zero_tangent_row(V::AbstractArray{<:Any, 3}) = zeros(eltype(V), 1, size(V, 2), size(V, 3))
ChainRulesCore.@non_differentiable _zero_tangent_row(::Any)

function _layer_jvp(l::Dense, x, V, t, ps, st, time_input::Bool)
    time_input || return first(l(x, ps, st)), _matmul3(ps.weight, V)
    return first(l(vcat(x, _time_row(x, t)), ps, st)), _matmul3(ps.weight, vcat(V, _zero_tangent_row(V)))
end
_layer_jvp(l::Pointwise, x, V, t, ps, st, ::Bool) = l.σ.(x), l.dσ.(x) .* V
function _layer_jvp(::ConcatSquashLayer, x, V, t, ps, st, ::Bool)
    gate = _squash_gate(ps, t)
    return (ps.weight * x .+ ps.bias) .* gate .+ ps.hyper_bias_weight .* t, _matmul3(ps.weight, V) .* gate
end

@generated function _jvp_spec(::Val{TI}, layers::NamedTuple{names}, x, V, t, ps, st) where {TI, names}
    body = Expr[]
    for (k, name) in enumerate(names)
        push!(body, :((x, V) = _layer_jvp(layers.$name, x, V, t, ps.$name, st.$name, $(TI[k]))))
    end
    return Expr(:block, body..., :(return (x, V)))
end

"""
    spec_jvp(m::SpecNet, z, V, t, ps, st) -> (f, J V)

The value `f(z, t)` (`(D, B)`) and the directional derivatives `(∂f/∂z) V[:, b, k]` of every sample along each
of the K directions of `V` (`(D, B, K)` in and out), in one pass through the layers.
"""
spec_jvp(m::SpecNet{TI}, z, V, t, ps, st) where {TI} = _jvp_spec(Val(TI), m.layers, z, V, t, ps, st)

"""
    _time_row(u, t)

A `1 x B` row filled with `t`, allocated like `u` (so it lives on the GPU when `u` does) with the element
type of `t` (a `ForwardDiff.Dual` when a Rosenbrock method differentiates in time).
"""
_time_row(u::AbstractMatrix, t) = fill!(similar(u, typeof(t), 1, size(u, 2)), t)
ChainRulesCore.@non_differentiable _time_row(::Any, ::Any)

_lux_layer(s::LinearSpec) = Dense(fan_in(s) => s.out; use_bias = s.bias)
_lux_layer(s::ActivationSpec) = Pointwise(ACTIVATIONS[s.name], ACTIVATION_DERIVATIVES[s.name])
_lux_layer(s::ConcatSquashSpec) = ConcatSquashLayer(s.in, s.out)

"""
    build_model(specs) -> SpecNet

The Lux model of a parsed spec: `LinearSpec` -> `Lux.Dense` (weight `(out, in)`, identity activation),
`ActivationSpec` -> [`Pointwise`](@ref), `ConcatSquashSpec` -> [`ConcatSquashLayer`](@ref).
"""
function build_model(specs::AbstractVector{<:LayerSpec})
    layers = Tuple(_lux_layer(s) for s in specs)
    names = ntuple(k -> Symbol("layer_", k), length(layers))
    time_input = Tuple(s isa LinearSpec && s.time_input for s in specs)
    return SpecNet(NamedTuple{names}(layers), time_input)
end

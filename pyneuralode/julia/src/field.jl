# The vector field: Lux model + parameters in Lux's layout + an exact evaluation counter.
#
# Layout map (DESIGN.md contract 1). pyneuralode's canonical flat vector holds, per Linear, the weight
# (out, in) flattened row-major (PyTorch convention) and then the bias. `ComponentArray(ps)` flattens Lux's
# NamedTuple by `append!`, i.e. each weight column-major (ComponentArrays src/componentarray.jl, `make_idx`).
# `perm` is the integer map between the two: `lux_flat == canonical[perm]` and, for gradients,
# `g_canonical[perm] == g_lux`. It is computed once, on the CPU, from the axes themselves (no assumption
# about the order in which Lux or ComponentArrays lay fields out).

"""
    AbstractField

A vector field PyNeuralODEJL solves and differentiates: callable `f(u, p, t)` (out-of-place, `u` of shape
`(D, B)`), with fields `p` (its current parameters), `nfe` (an exact evaluation counter), `device` and `eltype`, and
the methods [`num_parameters`](@ref), [`set_params!`](@ref), [`get_params`](@ref) and [`canonical_gradient`](@ref).
[`NeuralField`](@ref) (a layer spec on Lux) and [`DynamicsField`](@ref) (a user's `pn.dynamics`) are the two.
"""
abstract type AbstractField end

"""
    NeuralField

Callable `f(u, p, t)` (out-of-place ODE right-hand side, `u` of shape `(D, B)`) wrapping a [`SpecNet`](@ref).
Every call bumps `nfe[]` (an exact count of vector-field evaluations, forward or inside VJPs).

Fields: `model`, `st` (Lux state), `ax` (ComponentArray axes of the Lux parameters), `perm` (see the
layout map above), `p` (current parameters, Lux layout, on `device`), `nfe`, `device` (`:cpu`/`:cuda`),
`eltype` (`Float64` unless `dtype="float32"` was asked for).
"""
mutable struct NeuralField{M <: SpecNet, S, A, P <: AbstractVector} <: AbstractField
    model::M
    st::S
    ax::A
    perm::Vector{Int}
    p::P
    nfe::Base.RefValue{Int}
    device::Symbol
    eltype::DataType
end

_tick!(r::Base.RefValue{Int}) = (r[] += 1; nothing)
ChainRulesCore.@non_differentiable _tick!(::Any)

# The parameters as the Lux model reads them (`p.layer_k.weight`). SciMLSensitivity hands `p` back as the
# ComponentArray we gave it, except under ReverseDiff (`ReverseDiffAdjoint`, `ReverseDiffVJP`), which tracks it
# as a `ReverseDiff.TrackedArray` whose value is that ComponentArray (SciMLSensitivity derivative_wrappers.jl:
# `_tunables, _repack = _p, identity` for an array `p`, then `ReverseDiff.GradientTape`). ComponentArrays'
# ReverseDiff extension (ext/ComponentArraysReverseDiffExt.jl, `TrackedComponentArray`) gives exactly that type
# `getproperty`, returning tracked sub-arrays that tape as whole arrays -- so it must be passed through as it
# is: re-wrapping it in `ComponentArray(p, ax)` would read weights as views of a `TrackedArray`, which
# ReverseDiff does not define (`view`), falling back to element-wise `TrackedReal`s. Any other vector in Lux
# order (e.g. a plain gradient-free copy) is wrapped with the axes.
_components(p::ComponentArray, ax) = p
_components(p::ReverseDiff.TrackedArray{<:Any, <:Any, 1, <:ComponentArray}, ax) = p
_components(p::AbstractVector, ax) = ComponentArray(p, ax)

function (f::NeuralField)(u, p, t)
    _tick!(f.nfe)
    return first(f.model((u, t), _components(p, f.ax), f.st))
end

"""
    lux_permutation(specs, ax) -> Vector{Int}

`perm` with `lux_flat == canonical[perm]`, read off an index-valued ComponentArray with the Lux axes `ax`.
"""
function lux_permutation(specs::AbstractVector{<:LayerSpec}, ax)
    n = sum(num_params, specs)
    idx = ComponentArray(collect(1:n), ax)   # idx.layer_k.weight[i, j] == Lux flat position of W[i, j]
    length(idx) == n || error("Lux has $(length(idx)) parameters but the spec has $n")
    perm = zeros(Int, n)
    offset = 0
    for (k, s) in enumerate(specs)
        s isa ActivationSpec && continue
        L = getproperty(idx, Symbol("layer_", k))
        nin = s isa LinearSpec ? fan_in(s) : s.in
        size(L.weight) == (s.out, nin) ||
            error("layer_$k weight has size $(size(L.weight)), expected $((s.out, nin))")
        for i in 1:(s.out), j in 1:nin
            perm[L.weight[i, j]] = offset + (i - 1) * nin + j     # canonical: row-major (out, in)
        end
        offset += s.out * nin
        # Then the (out,)-sized tensors in canonical order: Linear's bias; ConcatSquash's bias, gate_weight
        # (out, 1), gate_bias, hyper_bias_weight (out, 1) -- an (out, 1) matrix is the same in both orders.
        vectors = s isa LinearSpec ? (s.bias ? (:bias,) : ()) :
            (:bias, :gate_weight, :gate_bias, :hyper_bias_weight)
        for name in vectors
            v = getproperty(L, name)
            for i in 1:(s.out)
                perm[v[i]] = offset + i
            end
            offset += s.out
        end
    end
    (offset == n && isperm(perm)) || error("internal error: the parameter layout map is not a permutation")
    return perm
end

_float_type(dtype::AbstractString) = dtype == "float64" ? Float64 :
    dtype == "float32" ? Float32 : throw(ArgumentError("dtype must be \"float32\" or \"float64\", got $(repr(dtype))"))

# Devices. The CPU is built in; `:cuda` methods live in ext/PyNeuralODEJLCUDAExt.jl (loaded with CUDA.jl).
# Extensions add methods for `Val{:cuda}`; they never overwrite the fallbacks below.
"""
    device_functional(device::Symbol) -> Bool

Whether `device` can run here (`:cpu` always; `:cuda` once CUDA.jl is loaded and a GPU works).
"""
device_functional(device::Symbol) = device_functional(Val(device))
device_functional(device::AbstractString) = device_functional(Symbol(device))
device_functional(::Val{:cpu}) = true
device_functional(::Val) = false

_device_array(::Val{:cpu}, x::AbstractArray) = x
function _device_array(::Val{D}, ::AbstractArray) where {D}
    throw(ArgumentError("device=\"$D\" is not available: for \"cuda\" add CUDA.jl to the Julia environment " *
                        "(python: juliapkg.add(\"CUDA\", \"052768ef-5323-5732-b1bb-66c8b64840ba\")) and load it " *
                        "(`using CUDA`) before building the field"))
end
_to_device(device::Symbol, x::AbstractArray) = _device_array(Val(device), x)
_host(x::AbstractArray) = Array(x)

"""The number of canonical parameters of a field."""
num_parameters(f::NeuralField) = length(f.perm)

"""
    evaluate(f::AbstractField, u, t) -> Matrix

One evaluation `f(u, f.p, t)` of the field at a `(D, B)` state, with conversions to `f.eltype` and
`f.device` and the result on the host (for tests and the Python side's `vector_field`). Counts as one NFE.
"""
function evaluate(f::AbstractField, u::AbstractMatrix, t::Real)
    U = _to_device(f.device, Matrix{f.eltype}(u))
    return Matrix{f.eltype}(_host(f(U, f.p, convert(f.eltype, t))))
end

"""
    build_field(description, flat; dtype = "float64", device = "cpu") -> NeuralField

Build the vector field of a spec description (see [`parse_spec`](@ref)) with canonical flat parameters
`flat`. Lux initialises in Float32; only its axes are kept and every value comes from `flat`, converted to
`dtype` (Float64 unless `"float32"` is asked for) and moved to `device` without changing the element type.
"""
function build_field(description::AbstractString, flat::AbstractVector; dtype::AbstractString = "float64",
        device::AbstractString = "cpu")
    specs = parse_spec(description)
    T = _float_type(dtype)
    model = build_model(specs)
    ps, st = LuxCore.setup(Xoshiro(0), model)
    ax = getaxes(ComponentArray(ps))
    perm = lux_permutation(specs, ax)
    dev = Symbol(device)
    p = ComponentArray(_to_device(dev, zeros(T, length(perm))), ax)
    field = NeuralField(model, st, ax, perm, p, Ref(0), dev, T)
    return set_params!(field, flat)
end

"""
    set_params!(f::NeuralField, flat) -> f

Load canonical flat parameters (PyTorch layout) into `f`, in Lux layout, on `f.device`.
"""
function set_params!(f::NeuralField, flat::AbstractVector)
    length(flat) == length(f.perm) ||
        throw(DimensionMismatch("expected $(length(f.perm)) parameters, got $(length(flat))"))
    lux = Vector{f.eltype}(flat)[f.perm]
    f.p = ComponentArray(_to_device(f.device, lux), f.ax)
    return f
end

"""
    get_params(f::NeuralField) -> Vector

The canonical flat parameters (PyTorch layout) of `f`, on the host.
"""
get_params(f::NeuralField) = to_canonical(f, _host(getdata(f.p)))

"""
    to_canonical(f, lux_flat) -> Vector

Map a vector in Lux order (parameters or their gradient) to pyneuralode's canonical order.
"""
function to_canonical(f::NeuralField, lux_flat::AbstractVector)
    out = zeros(f.eltype, length(f.perm))
    out[f.perm] .= lux_flat
    return out
end

# pyneuralode's `Network` (image classifiers with ODE blocks: the paper's MNIST ODE-Net, RK-Net, ResNet).
#
# Layout. Samples travel as Julia arrays `(W, H, C, B)` (WHCN, Lux's convention): the Python side hands over
# `x.T` of its C-ordered `(B, C, H, W)` batch, a free F-ordered view. Parameters stay ONE flat vector in
# pyneuralode's canonical order (DESIGN.md contract 1) and each layer reads its slice, so gradients come back
# canonical with no permutation:
# - Conv2d weight: canonical `(out, in, kh, kw)` row-major is, read column-major, the `(kw, kh, in, out)` array
#   that Lux's `Conv((kw, kh), in => out; cross_correlation = true)` expects for WHCN inputs
#   (W[a, b, i, o] = w[o, i, b, a]): a plain `reshape`. `cross_correlation = true` because PyTorch's Conv2d is
#   a cross-correlation and Lux's `Conv` flips the kernel otherwise (Lux src/layers/conv.jl docstring).
# - ConcatConv2d: the time is a constant channel placed first (torchdiffeq), i.e. channel 1 of dimension 3.
# - GroupNorm: consecutive channels form a group, as `torch.nn.GroupNorm`; biased variance, `eps` inside the
#   square root; weight then bias `(C,)`.
# - Flatten: `reshape(x, :, B)` of a `(W, H, C, B)` array is PyTorch's row-major flatten of `(C, H, W)`.
# - Augment: zeros appended on the first sample axis of PyTorch's layout (features of `(F, B)`, channels of
#   `(W, H, C, B)`), i.e. dimension `ndims(x) - 1` here (ANODE, Dupont et al. 2019).
# - Linear: canonical `(out, in)` row-major -> `permutedims(reshape(seg, in, out))` for Lux's `Dense`.
# - ODEBlock: y(t1) of dy/dt = field(t, y), y(0) = x, solved with the block's own `SolveOptions` (solver, step
#   control, `sensealg`), its field's parameters a plain `Vector` slice; exact NFE per block.

abstract type NetNode end

struct ConvNode{L} <: NetNode
    layer::L
    wshape::NTuple{4, Int}      # (kw, kh, in (+1 with the time channel), out)
    offset::Int
    bias::Bool
    time_channel::Bool
end

struct NormNode <: NetNode
    groups::Int
    channels::Int
    eps::Float64
    offset::Int
end

struct DenseNode{L} <: NetNode
    layer::L
    in::Int                     # fan-in, time input included
    out::Int
    bias::Bool
    time_input::Bool
    offset::Int
end

struct ActNode{F} <: NetNode
    σ::F
end

struct PoolNode <: NetNode end
struct FlattenNode <: NetNode end

struct AugmentNode <: NetNode
    dims::Int
end

struct SeqNode{C <: Tuple} <: NetNode
    children::C
end

struct ResNode{N <: NetNode} <: NetNode
    inner::N
end

"""
    ODENode

An ODE block: `field` (a node tree whose offsets start at 0 within the block's slice `offset + 1 : offset + n`
of the network's parameters), end time `t1`, the block's [`SolveOptions`](@ref) (set by
[`set_block_options!`](@ref)), an exact evaluation counter and the last solve's statistics and status.
"""
mutable struct ODENode{N <: NetNode} <: NetNode
    field::N
    t1::Float64
    offset::Int
    n::Int
    index::Int
    opts::Any
    nfe::Base.RefValue{Int}
    stats::NTuple{4, Int}
    status::String
end

"""
    JuliaNetwork

A compiled network: the node tree, its ODE blocks in spec order, the number of canonical parameters and the
element type. Callable as `net(x, flat)` -> logits `(classes, B)` for `x` in WHCN (or `(features, B)`).
"""
struct JuliaNetwork{N <: NetNode}
    root::N
    blocks::Vector{ODENode}
    nparams::Int
    eltype::DataType
end

# ---------------------------------------------------------------------------------------------- parsing
# The description is the spec in prefix order, items separated by ';' (pyneuralode/backends/julia/_network.py):
#   seq,N  (then N children) | res (then 1 child) | ode,T1,NPARAMS (then the field)
#   conv,IN,OUT,KH,KW,SH,SW,PH,PW,BIAS,TIME | gn,GROUPS,C,EPS | act,NAME | pool | flatten | augment,DIMS
#   linear,IN,OUT,BIAS,TIME
mutable struct _Parser
    items::Vector{SubString{String}}
    pos::Int
    offset::Int
    blocks::Vector{ODENode}
end

function _next_item!(ps::_Parser)
    ps.pos <= length(ps.items) || throw(ArgumentError("network description ends too early"))
    item = ps.items[ps.pos]
    ps.pos += 1
    return item, split(strip(item), ',')
end

function _ints(parts, n::Int, item)
    length(parts) == n + 1 || throw(ArgumentError("cannot parse network layer $(repr(item))"))
    return [parse(Int, parts[k]) for k in 2:(n + 1)]
end

function _parse_node!(ps::_Parser)
    item, parts = _next_item!(ps)
    kind = first(parts)
    if kind == "seq"
        n = only(_ints(parts, 1, item))
        return SeqNode(Tuple(_parse_node!(ps) for _ in 1:n))
    elseif kind == "res"
        return ResNode(_parse_node!(ps))
    elseif kind == "ode"
        length(parts) == 3 || throw(ArgumentError("cannot parse network layer $(repr(item))"))
        t1, n = parse(Float64, parts[2]), parse(Int, parts[3])
        outer = ps.offset
        ps.offset = 0                       # the field's offsets are relative to the block's slice
        node = ODENode(NullNode(), t1, outer, n, length(ps.blocks) + 1, nothing, Ref(0), (-1, -1, -1, -1),
            "NotRun")
        push!(ps.blocks, node)
        field = _parse_node!(ps)
        ps.offset == n || throw(ArgumentError("ODE block field has $(ps.offset) parameters, expected $n"))
        ps.offset = outer + n
        block = ODENode(field, t1, outer, n, node.index, nothing, node.nfe, node.stats, node.status)
        ps.blocks[node.index] = block
        return block
    elseif kind == "conv"
        cin, cout, kh, kw, sh, sw, ph, pw, bias, time = _ints(parts, 10, item)
        win = cin + time
        layer = Conv((kw, kh), win => cout; stride = (sw, sh), pad = (pw, ph), use_bias = bias == 1,
            cross_correlation = true)
        node = ConvNode(layer, (kw, kh, win, cout), ps.offset, bias == 1, time == 1)
        ps.offset += kw * kh * win * cout + (bias == 1 ? cout : 0)
        return node
    elseif kind == "gn"
        length(parts) == 4 || throw(ArgumentError("cannot parse network layer $(repr(item))"))
        groups, channels, eps = parse(Int, parts[2]), parse(Int, parts[3]), parse(Float64, parts[4])
        (channels % groups == 0) || throw(ArgumentError("GroupNorm: $channels channels, $groups groups"))
        node = NormNode(groups, channels, eps, ps.offset)
        ps.offset += 2 * channels
        return node
    elseif kind == "act" && length(parts) == 2
        name = String(parts[2])
        haskey(ACTIVATIONS, name) || throw(ArgumentError("unknown activation $(repr(name))"))
        return ActNode(ACTIVATIONS[name])
    elseif kind == "pool"
        return PoolNode()
    elseif kind == "flatten"
        return FlattenNode()
    elseif kind == "augment"
        dims = only(_ints(parts, 1, item))
        dims >= 1 || throw(ArgumentError("Augment needs at least one dimension, got $(repr(item))"))
        return AugmentNode(dims)
    elseif kind == "linear"
        nin, nout, bias, time = _ints(parts, 4, item)
        fan = nin + time
        node = DenseNode(Dense(fan => nout; use_bias = bias == 1), fan, nout, bias == 1, time == 1, ps.offset)
        ps.offset += fan * nout + (bias == 1 ? nout : 0)
        return node
    end
    throw(ArgumentError("cannot parse network layer $(repr(item))"))
end

"""Placeholder field of an ODE block while its description is being parsed."""
struct NullNode <: NetNode end

"""
    build_network(description; dtype = "float64") -> JuliaNetwork

Parse a network description (see the grammar above) into a node tree of Lux layers. The ODE blocks still
need their solve options: [`set_block_options!`](@ref) for each, in spec order.
"""
function build_network(description::AbstractString; dtype::AbstractString = "float64")
    items = split(description, ';'; keepempty = false)
    ps = _Parser(items, 1, 0, ODENode[])
    root = _parse_node!(ps)
    ps.pos == length(items) + 1 || throw(ArgumentError("network description has trailing items"))
    return JuliaNetwork(root, ps.blocks, ps.offset, _float_type(dtype))
end

"""
    set_block_options!(net, k, opts::SolveOptions) -> net

The solve options of ODE block `k` (1-based, spec order), from [`solve_options`](@ref).
"""
function set_block_options!(net::JuliaNetwork, k::Integer, opts::SolveOptions)
    1 <= k <= length(net.blocks) || throw(ArgumentError("network has $(length(net.blocks)) ODE blocks, not $k"))
    net.blocks[k].opts = opts
    return net
end

# ---------------------------------------------------------------------------------------------- layers
_slice(p, offset::Int, n::Int) = p[(offset + 1):(offset + n)]

"""A constant `(W, H, 1, B)` channel filled with `t` (ConcatConv2d's time channel)."""
_time_channel(x::AbstractArray{<:Any, 4}, t) = fill!(similar(x, typeof(t), size(x, 1), size(x, 2), 1, size(x, 4)), t)
ChainRulesCore.@non_differentiable _time_channel(::Any, ::Any)

function _apply(n::ConvNode, x, p, t)
    kw, kh, cin, cout = n.wshape
    nw = kw * kh * cin * cout
    weight = reshape(_slice(p, n.offset, nw), kw, kh, cin, cout)
    xin = n.time_channel ? cat(_time_channel(x, t), x; dims = 3) : x
    ps = n.bias ? (; weight, bias = _slice(p, n.offset + nw, cout)) : (; weight)
    return first(n.layer(xin, ps, NamedTuple()))
end

function _group_norm(x::AbstractArray{<:Any, 4}, γ, β, groups::Int, eps)
    W, H, C, B = size(x)
    m = W * H * (C ÷ groups)
    xg = reshape(x, m, groups, B)
    d = xg .- sum(xg; dims = 1) ./ m
    var = sum(abs2, d; dims = 1) ./ m
    y = reshape(d ./ sqrt.(var .+ eps), W, H, C, B)
    return y .* reshape(γ, 1, 1, C, 1) .+ reshape(β, 1, 1, C, 1)
end
_group_norm(x::AbstractMatrix, γ, β, groups::Int, eps) =
    reshape(_group_norm(reshape(x, 1, 1, size(x)...), γ, β, groups, eps), size(x))

function _apply(n::NormNode, x, p, t)
    C = n.channels
    T = eltype(p) <: AbstractFloat ? eltype(p) : Float64
    return _group_norm(x, _slice(p, n.offset, C), _slice(p, n.offset + C, C), n.groups, T(n.eps))
end

function _apply(n::DenseNode, x, p, t)
    weight = permutedims(reshape(_slice(p, n.offset, n.in * n.out), n.in, n.out))    # (out, in)
    ps = n.bias ? (; weight, bias = _slice(p, n.offset + n.in * n.out, n.out)) : (; weight)
    xin = n.time_input ? vcat(x, _time_row(x, t)) : x
    return first(n.layer(xin, ps, NamedTuple()))
end

_apply(n::ActNode, x, p, t) = n.σ.(x)
_apply(::PoolNode, x::AbstractArray{<:Any, 4}, p, t) = sum(x; dims = (1, 2)) ./ (size(x, 1) * size(x, 2))
_apply(::FlattenNode, x, p, t) = reshape(x, :, size(x, ndims(x)))
_apply(n::AugmentNode, x, p, t) = cat(x, _augment_zeros(x, n.dims); dims = ndims(x) - 1)

"""`dims` zero slices of `x` along dimension `ndims(x) - 1` (the feature or channel axis)."""
function _augment_zeros(x::AbstractArray, dims::Int)
    shape = ntuple(i -> i == ndims(x) - 1 ? dims : size(x, i), ndims(x))
    return fill!(similar(x, shape), zero(eltype(x)))
end
ChainRulesCore.@non_differentiable _augment_zeros(::Any, ::Any)
_apply(n::ResNode, x, p, t) = x .+ _apply(n.inner, x, p, t)
_apply(n::SeqNode, x, p, t) = _apply_chain(n.children, x, p, t)
_apply(::NullNode, x, p, t) = error("internal error: an ODE block without a field")

_apply_chain(::Tuple{}, x, p, t) = x
_apply_chain(c::Tuple, x, p, t) = _apply_chain(Base.tail(c), _apply(first(c), x, p, t), p, t)

# ---------------------------------------------------------------------------------------------- ODE blocks
"""The vector field of an ODE block: `(u, q, t) -> field(t, u)` with the block's parameters `q`, counted."""
struct BlockField{N <: ODENode}
    node::N
end
function (b::BlockField)(u, q, t)
    _tick!(b.node.nfe)
    return _apply(b.node.field, u, q, t)
end

function _record_block!(n::ODENode, sol)
    n.stats = _stats(sol)
    n.status = _status(sol, 2)
    n.status == "Success" || throw(_SolveFailed(n.status))
    return nothing
end
ChainRulesCore.@non_differentiable _record_block!(::Any, ::Any)


# As DiffEqFlux's `NeuralODE`: the problem is built from the incoming state and parameters inside the
# differentiated function, and `solve(prob, alg; sensealg, ...)` hits SciMLSensitivity's adjoint rule.
function _apply(n::ODENode, x, p, t)
    opts = n.opts
    opts isa SolveOptions || error("ODE block $(n.index) has no solve options: call set_block_options!")
    T = opts.eltype
    q = _slice(p, n.offset, n.n)
    reversed = n.t1 < 0
    s = reversed ? T[0, -n.t1] : T[0, n.t1]
    rhs = reversed ? Reversed(BlockField(n)) : BlockField(n)
    prob = flat_problem(rhs, x, (s[1], s[2]), q)      # a flat state: see `FlatRHS` (solve.jl)
    sol = solve(prob, opts.alg; saveat = s, sensealg = opts.sensealg, _solve_kwargs(opts, s; reversed)...)
    _record_block!(n, sol)
    return reshape(Array(sol)[:, end], size(x))
end

# ---------------------------------------------------------------------------------------------- entry points
(net::JuliaNetwork)(x, flat) = _apply(net.root, x, flat, zero(eltype(flat)))

function _reset_blocks!(net::JuliaNetwork)
    for b in net.blocks
        b.nfe[] = 0
        b.stats = (-1, -1, -1, -1)
        b.status = "NotRun"
    end
    return nothing
end

_block_counts(net::JuliaNetwork) = [b.nfe[] for b in net.blocks]
_block_steps(net::JuliaNetwork, k::Int) = [max(b.stats[k], 0) for b in net.blocks]

function _failed_block(net::JuliaNetwork)
    for b in net.blocks
        b.status in ("Success", "NotRun") || return b.index, b.status
    end
    return 0, "Success"
end

function _network_inputs(net::JuliaNetwork, flat::AbstractVector, x::AbstractArray)
    length(flat) == net.nparams ||
        throw(DimensionMismatch("expected $(net.nparams) parameters, got $(length(flat))"))
    T = net.eltype
    return Vector{T}(flat), Array{T}(x)
end

"""
    network_apply(net, flat, x) ->
        (logits, nfe, naccept, nreject, retcode, failed_block, warnings)

Logits `(classes, B)` for inputs `x` (WHCN, or `(features, B)`) with canonical parameters `flat`; per ODE
block (spec order) the counted evaluations and accepted/rejected steps. On a failed solve `retcode` names
the failure, `failed_block` the block (1-based) and `logits` is empty.
"""
function network_apply(net::JuliaNetwork, flat::AbstractVector, x::AbstractArray)
    P, X = _network_inputs(net, flat, x)
    _reset_blocks!(net)
    logger = WarnCollector()
    out = try
        Logging.with_logger(() -> net(X, P), logger)
    catch err
        err isa _SolveFailed || rethrow()
        err
    end
    k, status = _failed_block(net)
    logits = out isa _SolveFailed ? zeros(net.eltype, 0, 0) : Matrix{net.eltype}(out)
    return (logits, _block_counts(net), _block_steps(net, 2), _block_steps(net, 3), status, k,
        join(logger.messages, "\n"))
end

"""
    _network_failure(err, net, X, P) -> Union{_SolveFailed, Nothing}

As [`_failure`](@ref) for a whole network: an error from a differentiated block solve that is not our
`_SolveFailed` may be a failed solve seen by SciMLSensitivity's interpolation of the save times. Re-run the
network forward without AD (only on this error path): its blocks record their return codes, and the first
failing one is reported; `nothing` if every block succeeds (a genuine error: the caller rethrows it).
"""
function _network_failure(err, net::JuliaNetwork, X, P)
    err isa _SolveFailed && return err
    _reset_blocks!(net)
    try
        net(X, P)
    catch again
        again isa _SolveFailed && return again
        rethrow()
    end
    return nothing
end

"""Mean softmax cross-entropy of logits `(K, B)` against one-hot targets `Y` (`torch.nn.CrossEntropyLoss`)."""
function _cross_entropy(logits::AbstractMatrix, Y::AbstractMatrix)
    m = _column_max(logits)
    shifted = logits .- m
    logp = shifted .- log.(sum(exp.(shifted); dims = 1))
    return -sum(Y .* logp) / size(logits, 2)
end
_column_max(x) = maximum(x; dims = 1)          # any constant shift gives the same value and gradient
ChainRulesCore.@non_differentiable _column_max(::Any)

function _one_hot(::Type{T}, labels::AbstractVector, K::Int) where {T}
    Y = zeros(T, K, length(labels))
    for (b, l) in enumerate(labels)
        0 <= l < K || throw(ArgumentError("label $l out of range 0:$(K - 1)"))
        Y[Int(l) + 1, b] = one(T)
    end
    return Y
end
ChainRulesCore.@non_differentiable _one_hot(::Any, ::Any, ::Any)

"""
    network_value_and_grad(net, flat, x, labels) ->
        (value, grad, logits, nfe_forward, naccept, nreject, nfe_backward, retcode, failed_block, warnings,
         backward_warnings)

Mean cross-entropy of the logits against the 0-based integer `labels`, and its gradient with respect to the
canonical flat parameters (Zygote over the whole network; each ODE block's solve through its `sensealg`).
Counts per ODE block as in [`network_apply`](@ref); `nfe_backward` counts every field evaluation of the
backward pass. SciMLSensitivity returns no adjoint statistics (#1012): its warnings are returned instead.
"""
function network_value_and_grad(net::JuliaNetwork, flat::AbstractVector, x::AbstractArray, labels::AbstractVector)
    P, X = _network_inputs(net, flat, x)
    T = net.eltype
    _reset_blocks!(net)
    function objective(p)
        logits = net(X, p)
        return _cross_entropy(logits, _one_hot(T, labels, size(logits, 1))), logits
    end
    logger = WarnCollector()
    result = try
        Logging.with_logger(() -> Zygote.pullback(objective, P), logger)
    catch err
        failed = Logging.with_logger(() -> _network_failure(err, net, X, P), logger)
        failed === nothing && rethrow()
        failed
    end
    nfe_f, accepted, rejected = _block_counts(net), _block_steps(net, 2), _block_steps(net, 3)
    warnings = join(logger.messages, "\n")
    k, status = _failed_block(net)
    if result isa _SolveFailed
        return (zero(T), zeros(T, 0), zeros(T, 0, 0), nfe_f, accepted, rejected, zeros(Int, length(nfe_f)),
            status, k, warnings, "")
    end
    (value, logits), back = result
    for b in net.blocks
        b.nfe[] = 0
    end
    logger_b = WarnCollector()
    (grad,) = Logging.with_logger(() -> back((one(T), nothing)), logger_b)
    g = grad === nothing ? zeros(T, net.nparams) : Vector{T}(grad)
    return (T(value), g, Matrix{T}(logits), nfe_f, accepted, rejected, _block_counts(net), status, k, warnings,
        join(logger_b.messages, "\n"))
end

"""
    network_parameters(net, flat) -> Tuple

The parameters of every Conv/GroupNorm/Linear layer as the arrays the layers use (Conv weight
`(kw, kh, in, out)`, Linear weight `(out, in)`, vectors as they are), depth-first: the layout map made
visible, for the round-trip test against pyneuralode's canonical `unflatten`.
"""
function network_parameters(net::JuliaNetwork, flat::AbstractVector)
    P = Vector{net.eltype}(flat)
    out = Any[]
    _collect_parameters!(out, net.root, P)
    return Tuple(out)
end

function _collect_parameters!(out, n::ConvNode, p)
    kw, kh, cin, cout = n.wshape
    nw = kw * kh * cin * cout
    push!(out, reshape(_slice(p, n.offset, nw), kw, kh, cin, cout))
    n.bias && push!(out, _slice(p, n.offset + nw, cout))
    return out
end
function _collect_parameters!(out, n::NormNode, p)
    push!(out, _slice(p, n.offset, n.channels), _slice(p, n.offset + n.channels, n.channels))
    return out
end
function _collect_parameters!(out, n::DenseNode, p)
    push!(out, permutedims(reshape(_slice(p, n.offset, n.in * n.out), n.in, n.out)))
    n.bias && push!(out, _slice(p, n.offset + n.in * n.out, n.out))
    return out
end
_collect_parameters!(out, n::SeqNode, p) = (foreach(c -> _collect_parameters!(out, c, p), n.children); out)
_collect_parameters!(out, n::ResNode, p) = _collect_parameters!(out, n.inner, p)
_collect_parameters!(out, n::ODENode, p) = _collect_parameters!(out, n.field, _slice(p, n.offset, n.n))
_collect_parameters!(out, ::NetNode, p) = out

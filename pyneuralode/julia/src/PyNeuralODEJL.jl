"""
    PyNeuralODEJL

The Julia half of pyneuralode's `backend="julia"`: a neural ODE vector field described by pyneuralode's
backend-neutral spec, built as a Lux model, solved with the OrdinaryDiffEq sub-libraries and
differentiated with SciMLSensitivity.

Entry points (all take and return plain arrays, so juliacall converts them without surprises):

  - [`build_field`](@ref): spec description + canonical flat parameters -> [`NeuralField`](@ref)
  - [`set_params!`](@ref), [`get_params`](@ref): the canonical <-> Lux parameter layout map
  - [`evaluate`](@ref): one evaluation of the field (tests compare it with a numpy evaluation)
  - [`solve_options`](@ref): solver, step control and sensitivity algorithm, built once per model
  - [`forward`](@ref): solve with `saveat`, counted NFE next to `sol.stats`
  - [`vjp_forward`](@ref), [`vjp_backward`](@ref): value and gradient through the chosen `sensealg`
  - [`cnf_density`](@ref), [`cnf_value_and_grad`](@ref): pyneuralode's `CNF` (exact trace or Hutchinson with
    a fixed noise, optional RNODE regularisers) on the package's own augmented dynamics; [`cnf_logpx`](@ref)
    is the older exact-trace, forward-only hook
  - [`build_latent`](@ref), [`latent_encode`](@ref), [`latent_predict`](@ref), [`latent_value_and_grad`](@ref),
    [`set_latent_params!`](@ref), [`get_latent_params`](@ref): pyneuralode's `LatentODE` (recognition RNN,
    latent ODE, decoder, ELBO with a fixed ε) on four fields, parameters in the canonical flat layout
  - [`build_network`](@ref), [`set_block_options!`](@ref), [`network_apply`](@ref),
    [`network_value_and_grad`](@ref), [`network_parameters`](@ref): pyneuralode's `Network` (conv/group-norm
    image classifiers with ODE blocks) on Lux layers, parameters in the canonical flat layout
  - [`build_dynamics`](@ref): a user's `pn.dynamics` from the Julia source pyneuralode generates for its traced
    expression graph -> [`DynamicsField`](@ref), solved and differentiated by the same `forward`/`vjp_*`
  - [`build_loss`](@ref), [`loss_value_and_grad`](@ref): a user's `pn.loss` from the Julia source generated for
    its traced graph -> [`GraphLoss`](@ref); its value and Zygote gradient with respect to the saved states (the
    cotangent [`vjp_backward`](@ref) takes)
  - [`device_functional`](@ref): whether a device (`:cuda`, via the CUDA extension) can be used

Layouts: states are `(D, B)` matrices (features x batch, Julia's column-major convention); saved
solutions are `(D, B, T)`. The Python side transposes numpy's `(B, D)` / `(T, B, D)` views. Every solve runs on
the `vec` of its state (`FlatRHS` in solve.jl): SciMLSensitivity's `ReverseDiffAdjoint` accepts vector states
only.
"""
module PyNeuralODEJL

using ADTypes: AutoFiniteDiff, AutoForwardDiff
using ChainRulesCore: ChainRulesCore
using ComponentArrays: ComponentArray, getaxes, getdata
using Logging: Logging
using Lux: Conv, Dense
using LuxCore: LuxCore, AbstractLuxLayer, AbstractLuxWrapperLayer
using PrecompileTools: @compile_workload, @setup_workload
using Random: AbstractRNG, Xoshiro
using ReverseDiff: ReverseDiff
using SciMLBase: ContinuousCallback, EnsembleProblem, EnsembleThreads, ODEFunction, ODEProblem, ReturnCode, init,
    remake, solve, solve!, successful_retcode, terminate!
using SciMLSensitivity: BacksolveAdjoint, EnzymeVJP, GaussAdjoint, InterpolatingAdjoint,
    QuadratureAdjoint, ReverseDiffAdjoint, ReverseDiffVJP, ZygoteVJP
using Zygote: Zygote

# Solvers: one import per sub-library (OrdinaryDiffEq NEWS.md, "Package scope reduction").
using OrdinaryDiffEqBDF: FBDF, QNDF
using OrdinaryDiffEqCore: OrdinaryDiffEqCore, IController
using OrdinaryDiffEqHighOrderRK: DP8
using OrdinaryDiffEqLowOrderRK: BS3, DP5, Euler, Heun, Midpoint, RK4
using OrdinaryDiffEqRosenbrock: Rodas5P
using OrdinaryDiffEqSDIRK: ImplicitEuler, KenCarp3, KenCarp4, KenCarp5, Kvaerno3, Kvaerno4, Kvaerno5
using OrdinaryDiffEqTsit5: Tsit5
using OrdinaryDiffEqVerner: Vern7

export AbstractField, ActivationSpec, CNFDynamics, ConcatSquashLayer, ConcatSquashSpec, DynamicsField, GraphLoss,
    JuliaNetwork, LatentModel, LinearSpec, NeuralField,
    Pointwise, SolveOptions, SpecNet
export build_dynamics, build_field, build_network, event_forward, event_gradient, event_value, field_vjp, cnf_density, cnf_logpx, cnf_value_and_grad, device_functional, ensemble_forward, evaluate,
    forward, get_params, network_apply, network_parameters, network_value_and_grad, parse_spec,
    set_block_options!, set_params!, solve_options, spec_jvp, vjp_backward, vjp_forward
export build_loss, loss_value_and_grad
export build_latent, get_latent_params, latent_encode, latent_predict, latent_value_and_grad, set_latent_params!

include("layers.jl")
include("field.jl")
include("solve.jl")
include("cnf.jl")
include("latent.jl")
include("network.jl")
include("dynamics.jl")
include("loss.jl")
include("precompile.jl")

end # module PyNeuralODEJL

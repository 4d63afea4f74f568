# PrecompileTools workload: a tiny field through the most common path (Tsit5 forward, InterpolatingAdjoint
# with ZygoteVJP), so that the first call from Python does not compile all of it. Disable with the
# PrecompileTools preference `precompile_workload = false` for PyNeuralODEJL.
#
# The workload is wrapped in try/catch on purpose: this package's solve paths are exercised by the Python
# test-suite where Julia exists; if one of them breaks on some future SciML release, loading the package
# must still succeed (the real call then reports the error with its context) rather than fail precompilation.
@setup_workload begin
    description = "act,cube;linear,2,4,1,1;act,tanh;linear,4,2,1,0"
    nparams = sum(num_params, parse_spec(description))
    flat = collect(range(-0.5, 0.5; length = nparams))
    u0 = [0.5 -0.3; 0.2 0.1]          # (D = 2, B = 2)
    ts = [0.0, 0.5, 1.0]
    @compile_workload begin
        try
            field = build_field(description, flat)
            opts = solve_options(; solver = "tsit5", sensealg = "interpolating", vjp = "zygote")
            forward(field, opts, u0, ts)
            pending = first(vjp_forward(field, opts, u0, ts))
            pending === nothing || vjp_backward(pending, ones(2, 2, 3))
        catch err
            @debug "PyNeuralODEJL precompile workload failed; first calls will compile instead" exception = err
        end
    end
end
